"""The epoch loop timed on one device, bare or inside one Ray Train worker (the benchmark's gpu section).

A measurement warms the model up on a few synthetic batches (CUDA context, cuDNN plans, the caching
allocator), then times one full epoch of `train_epoch` with the recipe's optimizer, clipping and schedule.
"""

import json
import signal
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchTrainer
from torch import nn

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.models import model_from_config
from rnn_models.training.ingest import CHUNK_ROWS, Shares, torch_batches
from rnn_models.training.loop import make_optimizer, make_scheduler, train_epoch

WARM_UP_STEPS = 10  # enough for cuDNN's plans and the allocator's pools; not timed
RESULT_FILE = "samples_per_second.json"  # what the Ray worker hands back, in its checkpoint


def synthetic_batches(steps: int, batch_size: int, vocab_size: int, max_len: int, device) -> list[dict]:
    """Random reviews of every length from 1 to max_len, shaped like real batches."""
    g = torch.Generator().manual_seed(0)
    return [
        {
            "ids": torch.randint(0, vocab_size + 2, (batch_size, max_len), generator=g, dtype=torch.int32).to(
                device
            ),
            "length": torch.randint(1, max_len + 1, (batch_size,), generator=g).to(device),
            "label": torch.randint(0, 2, (batch_size,), generator=g).float().to(device),
        }
        for _ in range(steps)
    ]


def timed_epoch(
    model: nn.Module,
    cfg: TrainConfig,
    batches,
    steps_per_epoch: int,
    device: torch.device,
    vocab_size: int,
    max_len: int,
) -> float:
    """Training samples/s of one epoch over `batches` (after a warm-up); `model` is already on `device`."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    warm_up = synthetic_batches(WARM_UP_STEPS, cfg.batch_size, vocab_size, max_len, device)
    train_epoch(model, warm_up, optimizer, device, cfg.grad_clip, adversarial=cfg.adversarial)
    _synchronize(device)
    started = time.perf_counter()
    sums = train_epoch(model, batches, optimizer, device, cfg.grad_clip, scheduler, cfg.adversarial)
    _synchronize(device)  # kernels run asynchronously: wait for the epoch's last ones
    return sums.count / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ray_worker_throughput(
    runs: dict[str, dict], datasets: dict, storage: str, cpus: float, threads: int, gpus: int = 1
) -> dict:
    """Samples/s of each run's epoch loop inside one Ray Train worker holding `gpus` GPU (a whole one; 0 for
    the CPU) and `cpus` CPUs, streaming its dataset from Ray Data as training does. `runs`: name -> `run_spec`.
    One worker group for all runs: its start is paid once."""
    trainer = TorchTrainer(
        _timing_loop,
        train_loop_config={"runs": runs, "torch_threads": threads},
        scaling_config=ray.train.ScalingConfig(
            num_workers=1,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})},
        ),
        run_config=ray.train.RunConfig(name=f"timing-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage),
        datasets=datasets,
        dataset_config=Shares(workers=1),
    )  # as training feeds one worker
    # fit() in the main thread installs a SIGINT handler that holds its controller actor's handle, so the
    # controller (and its dataset manager) would outlive the run in a caller's Ray: the caller's handler back.
    caller_sigint = signal.getsignal(signal.SIGINT)
    try:
        result = trainer.fit()
    finally:
        signal.signal(signal.SIGINT, caller_sigint)
    with result.checkpoint.as_directory() as directory:
        return json.loads((Path(directory) / RESULT_FILE).read_text())


def run_spec(model_cfg: ModelConfig, cfg: TrainConfig, dataset: str, info: dict, train_reviews: int) -> dict:
    """One entry of `ray_worker_throughput`'s runs: the configs as dicts, the name of its dataset, the data's sizes."""
    return {
        "model": asdict(model_cfg),
        "train": asdict(cfg),
        "dataset": dataset,
        "vocab_size": info["vocab_size"],
        "max_len": info["max_len"],
        "steps_per_epoch": train_reviews // cfg.batch_size,
    }


def _timing_loop(config: dict) -> None:
    torch.set_num_threads(config["torch_threads"])
    device = ray.train.torch.get_device()
    rows = {}
    for name, run in config["runs"].items():
        model_cfg, cfg = ModelConfig(**run["model"]), TrainConfig(**run["train"])
        model = model_from_config(model_cfg, run["vocab_size"], run["max_len"], seed=cfg.seed)
        model = ray.train.torch.prepare_model(model)  # on this worker's GPU, as in training
        shard = ray.train.get_dataset_shard(run["dataset"])
        seed = cfg.seed if cfg.shuffle_buffer else None
        batches = torch_batches(
            shard, cfg.batch_size, device, seed, drop_last=True, chunk_rows=cfg.shuffle_buffer or CHUNK_ROWS
        )
        rows[name] = timed_epoch(
            model, cfg, batches, run["steps_per_epoch"], device, run["vocab_size"], run["max_len"]
        )
    with (
        tempfile.TemporaryDirectory() as directory
    ):  # Train V2 keeps what a checkpoint carries, not bare metrics
        (Path(directory) / RESULT_FILE).write_text(json.dumps(rows))
        ray.train.report({}, checkpoint=ray.train.Checkpoint.from_directory(directory))
