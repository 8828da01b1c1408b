"""The Ray Train worker: DDP training of one architecture, reporting and checkpointing every epoch.

Ray appears only at the marked lines; each epoch is the plain PyTorch of `loop.py`. After the last epoch the
same workers score the test split with the weights of the tested epoch (`tested_epoch`) and report the scores
with a checkpoint of those weights: the Train run's last result, and the checkpoint a report points to.
"""

import json
import math
import tempfile
import time

import ray.data
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.models import count_parameters, model_from_config, takes_any_length
from rnn_models.training.checkpoint import (checkpoint_meta, load_checkpoint, require_compatible, save_checkpoint,
                                              unwrap)
from rnn_models.training.ingest import scoring_batches, training_batches
from rnn_models.training.loop import Sums, evaluate, train_epoch


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.weight_decay:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """None for a constant rate; else `cfg.warmup` epochs of linear warm-up, then cosine decay to 0 at the last step."""
    if cfg.lr_schedule == "constant":
        return None
    warmup, total = max(1, round(steps_per_epoch * cfg.warmup)), max(1, steps_per_epoch * cfg.epochs)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def all_reduced(*sums: Sums, device) -> list[Sums]:
    """Add every worker's sums, so that every rank reports the same global numbers."""
    flat = torch.cat([s.as_tensor(device) for s in sums])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flat)
    return [Sums(*flat[i:i + 3].tolist()) for i in range(0, len(flat), 3)]


def train_loop_per_worker(config: dict) -> None:
    model_cfg, cfg, data = ModelConfig(**config["model"]), TrainConfig(**config["train"]), config["data"]
    torch.set_num_threads(config["torch_threads"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    any_length = takes_any_length(model_cfg)
    configs = {"configs_json": json.dumps({"model": config["model"], "train": config["train"]})}  # in every report
    # No torch.backends.cudnn.benchmark: it times convolution algorithms only (cuDNN RNNs have no such
    # search), and these models have no convolution. Precision: training/precision.py, per device.

    model = model_from_config(model_cfg, data["vocab_size"], data["max_len"], seed=cfg.seed)
    parameters = count_parameters(model)
    model = ray.train.torch.prepare_model(model)  # [1] DDP (gloo on CPU, NCCL on GPU), on this worker's device
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch=config["train_reviews"] // world // cfg.batch_size)
    first_epoch, history, tested = _restore(model, optimizer, scheduler, model_cfg, cfg, data)  # [2]

    train_shard, val_shard = _share("train", config, rank), _share("val", config, rank)  # [3]
    for epoch in range(first_epoch, cfg.epochs + 1):
        if _stopped_early(history, cfg.patience):
            break
        started = time.perf_counter()
        batches = training_batches(train_shard, cfg, any_length, device, epoch, rank)
        train = train_epoch(model, batches, optimizer, device, cfg.grad_clip, scheduler, cfg.adversarial)
        seconds = _elapsed(started, device)
        val = evaluate(unwrap(model), scoring_batches(val_shard, device, any_length), device)  # shares may differ
        train, val = all_reduced(train, val, device=device)
        history.append({"epoch": epoch, "train_loss": train.mean_loss, "train_accuracy": train.accuracy,
                        "val_loss": val.mean_loss, "val_accuracy": val.accuracy, "epoch_seconds": seconds,
                        "samples_per_second": train.count / seconds, "lr": optimizer.param_groups[0]["lr"]})
        best = tested_epoch(history, cfg)
        if best == epoch:  # the weights to test, kept here: scoring them reads no checkpoint back
            tested = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
        meta = checkpoint_meta(epoch, model_cfg, cfg, data, history)
        _report({**history[-1], **configs}, rank, model, optimizer, scheduler, meta, config["vocab"],
                tested=None if best == epoch else tested)

    # The test split, scored by this same worker group (each rank its share, the sums added across ranks), with
    # the tested epoch's weights, reported with a checkpoint of them: the run's result and its kept checkpoint.
    unwrap(model).load_state_dict(tested)
    batches = scoring_batches(_share("test", config, rank), device, any_length)
    test, = all_reduced(evaluate(unwrap(model), batches, device), device=device)
    best = tested_epoch(history, cfg)
    scores = {"test_accuracy": test.accuracy, "test_loss": test.mean_loss, "test_reviews": int(test.count)}
    meta = {**checkpoint_meta(best, model_cfg, cfg, data, history), "test": scores}
    metrics = {"val_accuracy": next(h["val_accuracy"] for h in history if h["epoch"] == best), "tested_epoch": best,
               **scores, "parameters": parameters, "history_json": json.dumps(history), **configs}
    _report(metrics, rank, model, None, None, meta, config["vocab"], tested=None)


def _share(split: str, config: dict, rank: int):
    """This worker's share of `split`: in the object store (cut by the trial), or streamed by Ray Train."""
    if config["shares"]:
        # blocks in their order, as Train's iterators keep them (`Shares`): the same seed, the same batches
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        return config["shares"][rank][split]
    return ray.train.get_dataset_shard(split)


def tested_epoch(history: list[dict], cfg: TrainConfig) -> int:
    """The epoch whose weights the test split scores: the first with the best val accuracy, or with
    `test_checkpoint` 'last' (the notebook) the last one."""
    if cfg.test_checkpoint == "last":
        return history[-1]["epoch"]
    return max(history, key=lambda h: h["val_accuracy"])["epoch"]  # max keeps the first of equals


def _restore(model, optimizer, scheduler, model_cfg: ModelConfig, cfg: TrainConfig,
             data: dict) -> tuple[int, list[dict], dict | None]:
    """Continue from the last checkpoint after a restart of the worker group or of the run: (epoch, history,
    the weights the test will score)."""
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return 1, [], None
    with checkpoint.as_directory() as directory:
        loaded = load_checkpoint(directory)
    require_compatible(loaded, model_cfg, data, "resume")
    history = loaded.meta["history"]
    if "test" in loaded.meta:  # the tested checkpoint: training is over, only the test is left to report
        return history[-1]["epoch"] + 1, history, loaded.state["model"]
    unwrap(model).load_state_dict(loaded.state["model"])
    optimizer.load_state_dict(loaded.state["optimizer"])
    if scheduler:
        scheduler.load_state_dict(loaded.state["scheduler"])
    tested = loaded.state["model"] if tested_epoch(history, cfg) == loaded.meta["epoch"] else loaded.state["tested"]
    return loaded.meta["epoch"] + 1, history, tested


def _elapsed(started: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously: wait for the epoch's last ones
    return time.perf_counter() - started


def _stopped_early(history: list[dict], patience: int) -> bool:
    if not patience or not history:
        return False
    best = max(range(len(history)), key=lambda i: history[i]["val_accuracy"])
    return len(history) - 1 - best >= patience


def _report(metrics: dict, rank: int, model, optimizer, scheduler, meta: dict, vocab: list[str],
            tested: dict | None) -> None:
    """Report `metrics` with a checkpoint (saved by rank 0) that also holds the weights to test if they are an
    earlier epoch's (`tested`), so that a restarted worker group still tests them."""
    with tempfile.TemporaryDirectory() as directory:
        checkpoint = None
        if rank == 0:  # one copy of the weights is enough: DDP keeps every rank identical
            save_checkpoint(directory, model=model, optimizer=optimizer, scheduler=scheduler, meta=meta, vocab=vocab,
                            tested=tested)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)  # [4] every rank reports, only rank 0 saves
