"""`jobs/benchmark.py`: what the pipeline costs next to plain single-process baselines, in the same run.

Sections (each a function returning a dict for benchmark.json):
- tokenize:   `prepare` on the full source (Ray tasks + pyarrow) vs the rule in plain Python, one process;
              and the two tokenisers compared on every review (mismatches must be 0)
- throughput: one Ray worker (a trial's own) streaming from Ray Data vs a bare loop over in-memory tensors, per arch
- scaling:    one vs two DDP workers for one arch
- end_to_end: `jobs/train_all.py` (its own process, all archs) vs the sum of the bare loops, with the
              job's peak memory (proportional set size of every process it started, Ray's included)
- gpu:        the GPU path: each arch's epoch loop bare and in one Ray worker, `train_all --preset seed`, and the
              best preset's test accuracies (`gpu.py`); skipped, saying so, without a GPU
- scale:      `prepare` on synthetic corpora of 1x, 4x, 16x IMDB: wall time, reviews/s, the driver's peak RSS
              (`scale.py`), on a local Ray or a cluster (`--address`, `--scale-out s3://…`)
- ddp_bytes:  gradient bytes DDP ranks send per step for each preset's models, dense and as touched table
              rows, figured and measured on two gloo ranks (`ddp_bytes.py`)

benchmark.json keeps the latest figures of every section: rerunning some sections replaces only theirs.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks import ddp_bytes as benchmark_ddp_bytes
from benchmarks import gpu as benchmark_gpu
from benchmarks import scale as benchmark_scale
from rnn_models.ablation import slices, split_tensors
from rnn_models.cluster import connect
from rnn_models.config import ModelConfig, PrepareConfig, RunConfig, TrainConfig
from rnn_models.data.prepare import prepare
from rnn_models.data.prepared import PreparedData, open_prepared
from rnn_models.data.sources import load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import normalise, normalise_reference
from rnn_models.errors import UserError
from rnn_models.files import write_json
from rnn_models.models import model_from_config
from rnn_models.presets import Recipe, load_preset
from rnn_models.resources import cluster_plan
from rnn_models.training.loop import EVAL_BATCH, evaluate, make_optimizer, train_epoch
from rnn_models.tuning.train import train


def tokenize(source: str, work: Path) -> dict:
    """`prepare` against the same work in one plain-Python process, with two spellings of the rule."""
    cfg = PrepareConfig(source=source, out=str(work / "tokenize"))
    seconds, vocab = {}, {}
    started = time.perf_counter()
    vocab["ray"] = prepare(cfg, force=True).vocab
    seconds["ray"] = time.perf_counter() - started
    for name, rule in (("python_translate", normalise_reference), ("python_per_character", _per_character)):
        started = time.perf_counter()
        vocab[name] = python_prepare(cfg, work / f"tokenize-{name}", rule)
        seconds[name] = time.perf_counter() - started
    texts = load_reviews(source).table["text"]
    rule_seconds, tokens = _rule_alone(texts)
    mismatches = sum(a != b for a, b in zip(tokens["pyarrow"], tokens["python_translate"]))
    return {
        "reviews": len(texts),
        "seconds": seconds,
        "reviews_per_second": {k: len(texts) / v for k, v in seconds.items()},
        "speedup": {k: v / seconds["ray"] for k, v in seconds.items() if k != "ray"},
        "rule_alone_seconds": rule_seconds,
        "mismatches": mismatches,
        "same_vocabulary": all(v == vocab["ray"] for v in vocab.values()),
    }


def _rule_alone(texts: pa.ChunkedArray) -> tuple[dict, dict]:
    """The rule without reading, counting or writing, in this one process: pyarrow's kernels vs plain Python."""
    strings, seconds, tokens = texts.to_pylist(), {}, {}
    for name, tokenise in (
        ("pyarrow", lambda: normalise(texts).to_pylist()),
        ("python_translate", lambda: [normalise_reference(t) for t in strings]),
        ("python_per_character", lambda: [_per_character(t) for t in strings]),
    ):
        started = time.perf_counter()
        tokens[name] = tokenise()
        seconds[name] = time.perf_counter() - started
    return seconds, tokens


def _per_character(text: str) -> list[str]:
    """The rule as the notebook states it, one character at a time: the most direct plain-Python spelling."""
    return "".join(c for c in text.lower() if unicodedata.category(c)[0] not in "PS").split()


def python_prepare(cfg: PrepareConfig, out: Path, rule=normalise_reference) -> list[str]:
    """The same work as `prepare` (read, split, tokenise, count, encode, write) in one plain-Python process."""
    splits = split_reviews(load_reviews(cfg.source).table, cfg)
    tokens = {name: [rule(t) for t in table["text"].to_pylist()] for name, table in splits.items()}
    counts = Counter(t for review in tokens["train"] for t in review)
    vocab = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: cfg.vocab_size]
    index = {t: i + 2 for i, t in enumerate(vocab)}
    out.mkdir(parents=True, exist_ok=True)
    for name, reviews in tokens.items():
        ids = [([index.get(t, 1) for t in review] + [0] * cfg.max_len)[: cfg.max_len] for review in reviews]
        table = pa.table(
            {
                "ids": pa.array(ids, pa.list_(pa.int32(), cfg.max_len)),
                "length": pa.array([min(len(r), cfg.max_len) for r in reviews], pa.int32()),
                "label": splits[name]["label"],
            }
        )
        pq.write_table(table, out / f"{name}.parquet")
    return vocab


def bare_loop(
    data: PreparedData, model_cfg: ModelConfig, cfg: TrainConfig, threads: int, test: bool = False
) -> dict:
    """The recipe in one process over in-memory tensors: the baseline the Ray pipeline is held to."""
    torch.set_num_threads(threads)
    started = time.perf_counter()
    train_set, val_set = split_tensors(data, "train"), split_tensors(data, "val")
    model = model_from_config(model_cfg, data.vocab_size, data.max_len, seed=cfg.seed)
    optimizer, cpu = make_optimizer(model, cfg), torch.device("cpu")
    generator = torch.Generator().manual_seed(cfg.seed)
    throughput = []
    for _ in range(cfg.epochs):
        order = torch.randperm(len(train_set["label"]), generator=generator)
        epoch_started = time.perf_counter()
        sums = train_epoch(model, slices(train_set, cfg.batch_size, order, drop_last=True), optimizer, cpu)
        throughput.append(sums.count / (time.perf_counter() - epoch_started))
        evaluate(model, slices(val_set, EVAL_BATCH), cpu)
    result = {"samples_per_second": throughput, "seconds": time.perf_counter() - started}
    if test:
        result["test_accuracy"] = evaluate(
            model, slices(split_tensors(data, "test"), EVAL_BATCH), cpu
        ).accuracy
        result["seconds"] = time.perf_counter() - started
    return result


def ray_worker(
    data: PreparedData, arch: str, cfg: TrainConfig, storage: Path, workers: int = 1, threads: int = 0
) -> dict:
    """The production path (a Tune trial training in its process, or a TorchTrainer's workers for several) for one arch."""
    run = RunConfig(
        data=str(data.root),
        archs=arch,
        workers_per_trial=workers,
        storage=str(storage),
        name=f"{arch}-{workers}w-{time.strftime('%H%M%S')}",
        torch_threads=threads,
    )
    history = train(run, Recipe(options=dataclasses.asdict(cfg)))["results"][0]["history"]
    return {"samples_per_second": [h["samples_per_second"] for h in history]}


def throughput(data: PreparedData, archs: list[str], work: Path, epochs: int = 2, threads: int = 0) -> dict:
    """Epoch 2 (warm) samples/s of one Ray worker (one trial) vs the bare loop with as many torch threads
    (`threads`, or as many as the resource rule gives one trial)."""
    threads = threads or cluster_plan(1).torch_threads
    cfg, rows = TrainConfig(epochs=epochs), {"threads": threads}
    for arch in archs:
        bare = bare_loop(data, ModelConfig(arch=arch), cfg, threads)["samples_per_second"]
        ray_ = ray_worker(data, arch, cfg, work / "throughput", threads=threads)["samples_per_second"]
        rows[arch] = {"bare": bare, "ray": ray_, "ratio": ray_[-1] / bare[-1]}
    return rows


def scaling(data: PreparedData, arch: str, work: Path) -> dict:
    cfg = TrainConfig(epochs=2)
    one, two = (
        ray_worker(data, arch, cfg, work / "scaling", workers=w)["samples_per_second"][-1] for w in (1, 2)
    )
    return {"arch": arch, "one_worker": one, "two_workers": two, "speedup": two / one}


def end_to_end(
    train_all: Path, source: str, data_dir: str, archs: list[str], work: Path, epochs: int, threads: int
) -> dict:
    """`jobs/train_all.py` as a user runs it (preset `seed`), vs the same models and recipe in bare loops, one
    after the other (`threads` each)."""
    prepare_job = train_all.with_name("prepare.py")  # prepared first: `tokenize` measures preparing
    subprocess.run(
        [sys.executable, str(prepare_job), "--source", source, "--out", data_dir],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    command = [
        sys.executable,
        str(train_all),
        "--data",
        data_dir,
        "--archs",
        ",".join(archs),
        "--epochs",
        str(epochs),
        "--storage",
        str(work / "end_to_end"),
        "--name",
        f"run-{time.strftime('%H%M%S')}",
    ]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    peak = _peak_memory(process)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}")
    data = open_prepared(data_dir)  # as the job prepared it
    seed = Recipe(load_preset("seed"), {"epochs": epochs})
    bare = {arch: bare_loop(data, *seed.resolve(arch), threads, test=True) for arch in archs}
    bare_seconds = sum(b["seconds"] for b in bare.values())
    return {
        "train_all_seconds": seconds,
        "bare_seconds": bare_seconds,
        "ratio": seconds / bare_seconds,
        "bare": {a: {"seconds": b["seconds"], "test_accuracy": b["test_accuracy"]} for a, b in bare.items()},
        "peak_memory_mb": peak / 2**20,
    }


def _peak_memory(process: subprocess.Popen, interval: float = 0.5) -> int:
    """Wait for `process`; return the peak over time of the summed PSS of every process in its session."""
    peak = 0
    while process.poll() is None:
        peak = max(peak, _session_pss(process.pid))
        time.sleep(interval)
    return peak


def _session_pss(session: int) -> int:
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == session
            ):
                rollup = (proc / "smaps_rollup").read_text()
                total += 1024 * int(
                    next(line for line in rollup.splitlines() if line.startswith("Pss:")).split()[1]
                )
        except (OSError, ValueError, StopIteration, IndexError):
            continue  # gone meanwhile, or not ours to read
    return total


def report(results: dict) -> str:
    """The benchmark's table, from what `results` holds."""
    lines = []
    if "tokenize" in results:
        t = results["tokenize"]
        labels = {
            "ray": "prepare (Ray Data + pyarrow)",
            "python_translate": "plain Python, str.translate table",
            "python_per_character": "plain Python, unicodedata per character",
        }
        lines += [
            "## Tokenisation: prepare on the full source",
            "| | reviews/s | seconds | prepare is faster by |",
            "|---|---:|---:|---:|",
        ]
        for key, seconds in t["seconds"].items():
            faster = f"{t['speedup'][key]:.1f}x" if key in t["speedup"] else ""
            lines.append(
                f"| {labels[key]} | {t['reviews_per_second'][key]:,.0f} | {seconds:.1f} | {faster} |"
            )
        rule = t["rule_alone_seconds"]
        lines += [
            "the rule alone, one process: "
            + ", ".join(f"{name} {t['reviews'] / seconds:,.0f} reviews/s" for name, seconds in rule.items())
        ]
        lines += [
            f"tokeniser mismatches over {t['reviews']:,} reviews: {t['mismatches']}; "
            f"same vocabulary everywhere: {t['same_vocabulary']}",
            "",
        ]
    if "throughput" in results:
        rows = dict(results["throughput"])
        lines += [
            f"## Training throughput, epoch 2 (samples/s, {rows.pop('threads')} torch thread(s) each)",
            "| arch | bare loop | Ray worker | ratio |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {a} | {r['bare'][-1]:,.0f} | {r['ray'][-1]:,.0f} | {r['ratio']:.2f} |"
            for a, r in rows.items()
        ]
        lines.append("")
    if "scaling" in results:
        s = results["scaling"]
        lines += [
            f"## DDP scaling ({s['arch']}): 1 worker {s['one_worker']:,.0f} samples/s, 2 workers "
            f"{s['two_workers']:,.0f} samples/s ({s['speedup']:.2f}x)",
            "",
        ]
    if "end_to_end" in results:
        e = results["end_to_end"]
        lines += [
            "## End to end",
            f"train_all {e['train_all_seconds']:.0f} s vs bare loops {e['bare_seconds']:.0f} s "
            f"(ratio {e['ratio']:.2f}); peak memory of the job {e['peak_memory_mb']:,.0f} MB (PSS)",
            "",
        ]
    if "gpu" in results:
        lines += benchmark_gpu.report_lines(results["gpu"])
    if "scale" in results:
        lines += benchmark_scale.report_lines(results["scale"])
    if "ddp_bytes" in results:
        lines += benchmark_ddp_bytes.report_lines(results["ddp_bytes"])
    return "\n".join(lines)


SECTIONS = ("end_to_end", "tokenize", "throughput", "scaling", "gpu", "scale", "ddp_bytes")


def run(
    train_all: Path,
    source: str,
    work: Path,
    sections: list[str],
    archs: list[str],
    epochs: int,
    threads: int = 0,
    scale_factors: tuple[int, ...] = (1, 4, 16),
    address: str | None = None,
    scale_out: str | None = None,
) -> dict:
    """The chosen sections, the jobs that start their own Ray first (end_to_end, scale, gpu's train_all), so
    that nothing else runs meanwhile."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise UserError(f"--sections: unknown {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    data_dir, results, saved = str(work / "prepared"), {}, work / "benchmark.json"
    kept = json.loads(saved.read_text()) if saved.is_file() else {}  # sections not rerun keep their figures

    def record(section: str, value: dict) -> None:  # saved after each section: a later failure keeps it
        results[section] = kept[section] = value
        work.mkdir(parents=True, exist_ok=True)
        write_json(saved, kept)

    if "gpu" in sections and not torch.cuda.is_available():
        print(benchmark_gpu.NO_GPU, flush=True)
        record("gpu", {"skipped": benchmark_gpu.NO_GPU})
        sections = [s for s in sections if s != "gpu"]
    if "end_to_end" in sections:
        record(
            "end_to_end", end_to_end(train_all, source, data_dir, archs, work, epochs, threads=os.cpu_count())
        )
    if "scale" in sections:
        record("scale", benchmark_scale.scale(source, work, scale_factors, address, scale_out))
    if "gpu" in sections:  # its train_all job starts its own Ray too
        gpu_started = time.perf_counter()
        seed_run = benchmark_gpu.train_all_seed(train_all, source, data_dir, work, archs)
    if "ddp_bytes" in sections:  # no Ray: models and tokens only
        record("ddp_bytes", benchmark_ddp_bytes.ddp_bytes(source))
    if not set(sections) - {"end_to_end", "scale", "ddp_bytes"}:
        return results
    connect()
    data = prepare(PrepareConfig(source=source, out=data_dir))
    if "tokenize" in sections:
        record("tokenize", tokenize(source, work))
    if "throughput" in sections:
        record("throughput", throughput(data, archs, work, threads=threads))
    if "scaling" in sections:
        record("scaling", scaling(data, "lstm", work))
    if "gpu" in sections:
        record("gpu", benchmark_gpu.gpu(source, work, archs, data, seed_run, gpu_started))
    return results
