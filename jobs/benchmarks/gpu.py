"""The benchmark's gpu section (`jobs/benchmark.py --sections gpu`): the GPU path checked in one run.

1. throughput: each architecture's epoch loop on the GPU, bare (tensors already on the GPU) and inside one
   Ray Train worker holding the whole GPU (streaming from Ray Data through pinned copies), for the `seed`
   configuration and the best preset's; the two BiLSTMs also bare in their unpacked (CPU) form, to check
   that the packed form CUDA takes is the faster one there;
2. train_all: `python jobs/train_all.py --preset seed` end to end in its own process and Ray, four trials
   sharing the GPU (fractional GPUs, one worker each);
3. best preset: its four architectures trained the same way, through `train`, with their test accuracy.

Sized by design, not yet by measurement, to finish in under 8 minutes on one H100/H200-class GPU with 16
CPUs, Ray's starts included: part 1 times one epoch per measurement after 10 synthetic warm-up steps (12
bare, 8 in one Ray worker group started once); parts 2 and 3 are the presets' own recipes (10 epochs of
64 tokens; at most 6 of 400 tokens, stopping after 2 without a better val accuracy). Estimated: preparing
the data and starting Ray three times ~1.5 min, part 1 ~1.5 min, part 2 ~1.5 min, part 3 ~2.5 min.
"""

import contextlib
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.timing import ray_worker_throughput, run_spec, timed_epoch
from rnn_models.ablation import slices, split_tensors
from rnn_models.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig
from rnn_models.data.prepare import prepare
from rnn_models.data.prepared import PreparedData
from rnn_models.models import model_from_config
from rnn_models.presets import Preset, Recipe, load_preset
from rnn_models.resources import cluster_plan
from rnn_models.training.ingest import DataSpec
from rnn_models.training.precision import precision_for
from rnn_models.tuning.train import train

NO_GPU = "no GPU: the gpu section is skipped"
# The larger preset this section times and trains. Not the best one any more (`frontier` is, README's
# Results): the 8-minute sizing above was estimated for `tuned`'s recipe, and frontier's is not measured on a GPU.
BEST_PRESET = "tuned"
TWO_FORMS = ("bilstm", "handrolled_bilstm")  # packed on CUDA, unpacked on the CPU
RESULT_KEYS = ("test_accuracy", "val_accuracy", "epochs", "train_seconds", "samples_per_second")


def train_all_seed(train_all: Path, source: str, data_dir: str, work: Path, archs: list[str]) -> dict:
    """Part 2, run before this process starts Ray: the job as a user runs it, with its own Ray."""
    prepare_job = train_all.with_name("prepare.py")  # prepared first (cached): preparing is not what is timed
    subprocess.run(
        [sys.executable, str(prepare_job), "--source", source, "--out", data_dir],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    storage, name = work / "gpu", f"seed-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [
        sys.executable,
        str(train_all),
        "--data",
        data_dir,
        "--preset",
        "seed",
        "--archs",
        ",".join(archs),
        "--storage",
        str(storage),
        "--name",
        name,
    ]
    storage.mkdir(parents=True, exist_ok=True)
    log = storage / f"{name}.log"
    started = time.perf_counter()
    with log.open("w") as out:
        returncode = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if returncode:
        raise RuntimeError(f"{shlex.join(command)} exited with {returncode}; its output is in {log}")
    return {"seconds": seconds, **read_results(storage / name / "results.json")}


def gpu(
    source: str,
    work: Path,
    archs: list[str],
    seed_data: PreparedData,
    train_all_run: dict,
    started: float,
    device: torch.device = torch.device("cuda"),
) -> dict:
    """Parts 1 and 3 on the connected Ray (part 2 ran before); `started`: when the section began. `device`
    is the GPU (the CPU only to try this code without one)."""
    best = load_preset(BEST_PRESET)
    best_data = prepare(
        PrepareConfig(source=source, out=str(work / f"prepared-{BEST_PRESET}"), **best.prepare)
    )
    presets = {"seed": (load_preset("seed"), seed_data), BEST_PRESET: (best, best_data)}
    samples_per_second = throughput(presets, archs, work, device)
    name = f"{BEST_PRESET}-{time.strftime('%Y%m%d-%H%M%S')}"
    best_started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # the run's own table: stdout keeps the benchmark's alone
        train(
            RunConfig(data=best_data.root, archs=",".join(archs), storage=str(work / "gpu"), name=name),
            Recipe(best),
        )
    best_run = {
        "preset": BEST_PRESET,
        "seconds": time.perf_counter() - best_started,
        **read_results(work / "gpu" / name / "results.json"),
    }
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "torch": torch.__version__,
        "precision": precision_for(device).describe(),
        "samples_per_second": samples_per_second,
        "train_all_seed": train_all_run,
        "best_preset": best_run,
        "seconds": time.perf_counter() - started,
    }


def throughput(
    presets: dict[str, tuple[Preset, PreparedData]], archs: list[str], work: Path, device: torch.device
) -> dict:
    """Part 1: {preset: {arch: {"bare", "ray"[, "bare_unpacked"]}}} in training samples/s."""
    rows, runs, datasets = {}, {}, {}
    for name, (preset, data) in presets.items():
        tensors = {k: v.to(device) for k, v in split_tensors(data, "train").items()}
        spec = DataSpec.from_prepared(data).load(splits=("train",))
        datasets[name] = spec.dataset("train")
        rows[name] = {}
        for arch in archs:
            model_cfg, cfg = Recipe(preset).resolve(arch)
            rows[name][arch] = {"bare": bare_epoch(model_cfg, cfg, data, tensors)}
            if arch in TWO_FORMS:
                rows[name][arch]["bare_unpacked"] = bare_epoch(model_cfg, cfg, data, tensors, pack=False)
            runs[f"{name}/{arch}"] = run_spec(model_cfg, cfg, name, spec.info, data.count("train"))
    plan = cluster_plan(1)  # one trial alone: a whole GPU, and the CPUs the resource rule gives it
    in_ray = ray_worker_throughput(
        runs,
        datasets,
        str(work / "gpu"),
        plan.cpus_per_worker,
        plan.torch_threads,
        gpus=int(device.type == "cuda"),
    )
    for key, value in in_ray.items():
        name, arch = key.split("/")
        rows[name][arch]["ray"] = value
    return rows


def bare_epoch(
    model_cfg: ModelConfig, cfg: TrainConfig, data: PreparedData, tensors: dict, pack: bool | None = None
) -> float:
    """One process, no Ray: the recipe over tensors already on the GPU, in a seeded order."""
    device = tensors["label"].device
    model = model_from_config(model_cfg, data.vocab_size, data.max_len, seed=cfg.seed).to(device)
    if pack is not None:
        model.pack = pack  # the BiLSTMs' other form
    order = torch.randperm(len(tensors["label"]), generator=torch.Generator().manual_seed(cfg.seed)).to(
        device
    )
    batches = slices(tensors, cfg.batch_size, order, drop_last=True)
    return timed_epoch(
        model, cfg, batches, len(order) // cfg.batch_size, device, data.vocab_size, data.max_len
    )


def read_results(path: Path) -> dict:
    """What a run's results.json says of each architecture, and the resources its trials had."""
    document = json.loads(path.read_text())
    archs = {arch: {k: r[k] for k in RESULT_KEYS} for arch, r in document["results"].items()}
    return {"plan": document["config"]["plan"], "archs": archs}


def report_lines(g: dict) -> list[str]:
    """The gpu section's table, from what benchmark.json holds."""
    if "skipped" in g:
        return ["## GPU", g["skipped"], ""]
    best, seed_run, best_run = g["best_preset"]["preset"], g["train_all_seed"], g["best_preset"]
    lines = [
        f"## GPU: {g['device']}, torch {g['torch']} ({g['precision']})",
        f"| arch | seed: bare | seed: Ray worker | {best}: bare | {best}: Ray worker | "
        f"train_all seed: test accuracy | {best}: test accuracy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for arch, s in g["samples_per_second"]["seed"].items():
        b = g["samples_per_second"][best][arch]
        accuracy = [
            run["archs"][arch]["test_accuracy"] if arch in run["archs"] else float("nan")
            for run in (seed_run, best_run)
        ]
        lines.append(
            f"| {arch} | {s['bare']:,.0f} | {s['ray']:,.0f} | {b['bare']:,.0f} | {b['ray']:,.0f} | "
            f"{accuracy[0]:.2%} | {accuracy[1]:.2%} |"
        )
    forms = [
        f"{arch} {name} {r['bare']:,.0f} / {r['bare_unpacked']:,.0f}"
        for name, rows in g["samples_per_second"].items()
        for arch, r in rows.items()
        if "bare_unpacked" in r
    ]
    lines += [
        "training samples/s over one epoch after 10 warm-up steps; bare: tensors already on the GPU; "
        "Ray worker: one Train worker holding the GPU, streaming from Ray Data"
    ]
    if forms:
        lines.append(
            "BiLSTM forms, bare, packed (CUDA's) / unpacked (the CPU's) samples/s: " + "; ".join(forms)
        )
    lines += [
        f"train_all --preset seed end to end: {seed_run['seconds']:.0f} s, "
        f"{seed_run['plan']['gpus_per_worker']:g} GPU per trial; {best} through train: "
        f"{best_run['seconds']:.0f} s, {best_run['plan']['gpus_per_worker']:g} GPU per trial; "
        f"the whole section: {g['seconds']:.0f} s",
        "",
    ]
    return lines
