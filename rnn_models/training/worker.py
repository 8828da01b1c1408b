"""Training one architecture on Ray: every epoch reported with a checkpoint, then the test split scored.

`train_and_test` is the loop; Ray appears only through its `edges`, at the marked lines [1]-[4]:
- `TrainWorker`: a rank of a Ray Train worker group (several DDP ranks), via `train_loop_per_worker`;
- `LoneWorker`: a trial's own process, reporting to Ray Tune. One worker has nothing to coordinate, and Train's
  controller, worker and synchronization processes cost a trial more CPU at start than its first epochs.
The epochs are the plain PyTorch of `loop.fit`, each reported with a checkpoint. After the last one the same
workers score the test split with the weights of the tested epoch (`loop.tested_epoch`) and report the scores
with a checkpoint of those weights: the run's last result, and the checkpoint a report points to.
"""

import tempfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import ray.data
import ray.train
import ray.train.torch
import ray.tune
import torch
import torch.distributed as dist

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.models import count_parameters, model_from_config, takes_any_length
from rnn_models.stats import KEYED_BY_SOURCE_ORDER
from rnn_models.training.checkpoint import (
    checkpoint_meta,
    load_checkpoint,
    require_compatible,
    save_checkpoint,
    unwrap,
)
from rnn_models.training.ingest import scoring_batches, training_batches
from rnn_models.training.loop import METRIC, Sums, evaluate, fit, make_optimizer, make_scheduler, tested_epoch
from rnn_models.training.table_rows import leave_tables_to_rows


@dataclass(frozen=True)
class TrialInputs:
    """What a trial's worker(s) train by, resolved once by the trial (tuning/trial.py) and carried as it is."""

    model: ModelConfig
    train: TrainConfig
    data: dict  # the prepared data's `info`: vocab_size, max_len, fingerprint
    vocab: list[str]  # kept in every checkpoint, so that `predict` needs no prepared data
    train_reviews: int
    torch_threads: int
    shares: list[dict] | None  # per rank, split -> its share in the object store; None: Train streams them


class TrainWorker:
    """The edges inside a Ray Train worker group: DDP, Train's checkpoints and reports, Train's dataset shards."""

    def __init__(self):
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def wrap(self, model: torch.nn.Module, table_grads: str) -> torch.nn.Module:
        if table_grads == "rows" and self.world > 1:
            leave_tables_to_rows(model)  # DDP leaves the embedding tables to table_rows.add_up_rows
        return ray.train.torch.prepare_model(model)  # DDP (gloo on CPU, NCCL on GPU), on this worker's device

    def checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()

    def share(self, split: str, inputs: TrialInputs):
        """This rank's share of `split`: cut by the trial from the object store, or streamed by Ray Train."""
        if inputs.shares:
            _keep_block_order()
            return inputs.shares[self.rank][split]
        return ray.train.get_dataset_shard(split)

    def report(self, metrics: dict, directory: str | None) -> None:
        ray.train.report(metrics, checkpoint=directory and ray.train.Checkpoint.from_directory(directory))


class LoneWorker:
    """The edges of a trial that trains in its own process: Tune's checkpoints and reports, whole splits."""

    rank, world = 0, 1

    def __init__(self, splits: dict):
        self.splits = splits  # split -> dataset, in the object store or streamed from its shards
        self.device = torch.device(
            "cuda" if ray.get_gpu_ids() else "cpu"
        )  # Ray shows the trial its own GPU only

    def wrap(self, model: torch.nn.Module, table_grads: str) -> torch.nn.Module:
        return model.to(self.device)

    def checkpoint(self) -> ray.tune.Checkpoint | None:
        return ray.tune.get_checkpoint()

    def share(self, split: str, inputs: TrialInputs):
        _keep_block_order()
        return self.splits[split]

    def report(self, metrics: dict, directory: str | None) -> None:
        ray.tune.report(metrics, checkpoint=directory and ray.tune.Checkpoint.from_directory(directory))


def _keep_block_order() -> None:
    """Blocks in their order, as Train's iterators keep them (`Shares`): the same seed, the same batches."""
    ray.data.DataContext.get_current().execution_options.preserve_order = True


def all_reduced(*sums: Sums, device) -> list[Sums]:
    """Add every worker's sums, so that every rank reports the same global numbers."""
    flat = torch.cat([s.as_tensor(device) for s in sums])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flat)
    return [Sums(*flat[i : i + 3].tolist()) for i in range(0, len(flat), 3)]


def train_loop_per_worker(config: dict) -> None:
    """Ray Train's entry point on each rank of a trial's worker group (Train hands over a dict: the inputs in it)."""
    train_and_test(config["inputs"], TrainWorker())


def train_and_test(inputs: TrialInputs, edges: TrainWorker | LoneWorker) -> dict:
    """Train by `inputs`, reporting every epoch, then score the test split; returns the last report's metrics."""
    model_cfg, train_cfg, data = inputs.model, inputs.train, inputs.data
    torch.set_num_threads(inputs.torch_threads)
    rank, world, device = edges.rank, edges.world, edges.device
    any_length = takes_any_length(model_cfg)
    planned = {"planned_epochs": train_cfg.epochs}  # in every report, for the progress lines
    # No torch.backends.cudnn.benchmark: it times convolution algorithms only (cuDNN RNNs have no such
    # search), and these models have no convolution. Precision: training/precision.py, per device.

    model = model_from_config(model_cfg, data["vocab_size"], data["max_len"], seed=train_cfg.seed)
    parameters = count_parameters(model)
    model = edges.wrap(model, train_cfg.table_grads)  # [1]
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_scheduler(
        optimizer, train_cfg, steps_per_epoch=inputs.train_reviews // world // train_cfg.batch_size
    )
    history, tested = _restore(
        edges.checkpoint(), model, optimizer, scheduler, model_cfg, train_cfg, data
    )  # [2]
    train_shard, val_shard = edges.share("train", inputs), edges.share("val", inputs)  # [3]

    def report_epoch(history: list[dict], earlier: dict | None) -> None:
        meta = checkpoint_meta(history[-1]["epoch"], model_cfg, train_cfg, data, history)
        _report(
            edges,
            {**history[-1], **planned},
            model,
            optimizer,
            scheduler,
            meta,
            inputs.vocab,
            tested=earlier,
        )

    history, tested = fit(
        model,
        optimizer,
        scheduler,
        train_cfg,
        lambda epoch: training_batches(train_shard, train_cfg, any_length, device, epoch, rank),
        lambda: scoring_batches(val_shard, device, any_length),
        device,
        history,
        tested,
        add_up=lambda *sums: all_reduced(*sums, device=device),
        after_epoch=report_epoch,
        rank=rank,
    )

    # The test split, scored by this same worker group (each rank its share, the sums added across ranks), with
    # the tested epoch's weights, reported with a checkpoint of them: the run's result and its kept checkpoint.
    unwrap(model).load_state_dict(tested)
    batches, predicted = scoring_batches(edges.share("test", inputs), device, any_length), []
    (test,) = all_reduced(evaluate(unwrap(model), batches, device, predicted), device=device)
    predictions = gathered_predictions(predicted, world)  # every rank's reviews, on every rank
    best = tested_epoch(history, train_cfg)
    scores = {"test_accuracy": test.accuracy, "test_loss": test.mean_loss, "test_reviews": int(test.count)}
    meta = {**checkpoint_meta(best, model_cfg, train_cfg, data, history), "test": scores}
    metrics = {
        METRIC: next(h[METRIC] for h in history if h["epoch"] == best),
        "tested_epoch": best,
        **scores,
        "parameters": parameters,
        **planned,
    }  # the history and configs travel in the checkpoint's meta only
    _report(edges, metrics, model, None, None, meta, inputs.vocab, tested=None, predictions=predictions)
    return metrics


def gathered_predictions(parts: list[tuple], world: int) -> pa.Table | None:
    """Each test review's key (the test shards' `review`), label and logit (positive above 0, as scored), from
    every rank's scored batches (`evaluate`'s `predictions`), in the keys' order. None for batches without keys.
    Every rank joins the gather, even one whose share was empty."""
    if any(review is None for review, _, _ in parts):
        columns = None  # a split without the reviews' keys (train, val)
    elif parts:
        columns = [torch.cat(column).cpu().numpy() for column in zip(*parts)]  # review, label, logit
    else:
        columns = [np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32)]
    if world > 1:
        everyone = [None] * world
        dist.all_gather_object(everyone, columns)  # a few bytes a review
        columns = None if None in everyone else [np.concatenate(c) for c in zip(*everyone)]
    if columns is None:
        return None
    review, label, logit = columns
    order = np.argsort(review, kind="stable")
    return pa.table(
        {
            "review": review[order],
            "label": label[order].astype(np.int8),
            "logit": logit[order].astype(np.float32),
        },
        metadata=KEYED_BY_SOURCE_ORDER,
    )


def _restore(
    checkpoint, model, optimizer, scheduler, model_cfg: ModelConfig, train_cfg: TrainConfig, data: dict
) -> tuple[list[dict], dict | None]:
    """Continue from the last checkpoint after a restart of the worker group, the trial or the run: (the
    history so far, the weights the test will score)."""
    if not checkpoint:
        return [], None
    with checkpoint.as_directory() as directory:
        loaded = load_checkpoint(directory)
    require_compatible(loaded, model_cfg, data, "resume")
    history = loaded.meta["history"]
    if "test" in loaded.meta:  # the tested checkpoint: training is over, only the test is left to report
        return history, loaded.state["model"]
    unwrap(model).load_state_dict(loaded.state["model"])
    optimizer.load_state_dict(loaded.state["optimizer"])
    if scheduler:
        scheduler.load_state_dict(loaded.state["scheduler"])
    tested = (
        loaded.state["model"]
        if tested_epoch(history, train_cfg) == loaded.meta["epoch"]
        else loaded.state["tested"]
    )
    return history, tested


def _report(
    edges: TrainWorker | LoneWorker,
    metrics: dict,
    model,
    optimizer,
    scheduler,
    meta: dict,
    vocab: list[str],
    tested: dict | None,
    predictions: pa.Table | None = None,
) -> None:
    """Report `metrics` with a checkpoint (saved by rank 0) that also holds the weights to test if they are an
    earlier epoch's (`tested`), so that a restarted worker group or trial still tests them."""
    with tempfile.TemporaryDirectory() as directory:
        if edges.rank == 0:  # one copy of the weights is enough: DDP keeps every rank identical
            save_checkpoint(
                directory,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                meta=meta,
                vocab=vocab,
                tested=tested,
                predictions=predictions,
            )
        edges.report(metrics, directory if edges.rank == 0 else None)  # [4] every rank reports, rank 0 saves
