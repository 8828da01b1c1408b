"""Ray Tune runs the architectures as parallel trials; each trial drives its own Ray Train run.

    Tuner ── trial (run_trial, ~0 CPU) ── TorchTrainer ── worker 0..N-1 (train_loop_per_worker, DDP)
                                       └─ best checkpoint by val accuracy ── tested on the test split

A trial's Train run is named after the trial (`<arch>-<trial id>`), so that a restarted worker group,
a retried trial or a resumed experiment finds its checkpoints and continues instead of starting over.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass

import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.errors import UserError
from rnn_models.models import count_parameters
from rnn_models.resources import DRIVER_CPUS, Plan
from rnn_models.storage import Storage
from rnn_models.training.evaluation import test_checkpoint
from rnn_models.training.checkpoint import load_checkpoint
from rnn_models.training.ingest import DataSpec
from rnn_models.training.worker import train_loop_per_worker

log = logging.getLogger(__name__)
METRIC = "val_accuracy"  # what picks the best checkpoint of a trial, and the best trial


@dataclass(frozen=True)
class TrialSettings:
    """What every trial shares and is not a hyperparameter (recomputed when a run resumes)."""

    plan: Plan
    train_storage: str  # where the trials' Train runs keep their checkpoints
    max_failures: int


def run_trial(config: dict, data: DataSpec, settings: TrialSettings) -> dict:
    """One trial: train `config["arch"]` with a TorchTrainer, then test its best checkpoint."""
    arch = config["arch"]
    own = config.get("by_arch", {}).get(arch, {})  # a search samples "model"/"train"; a run resolves "by_arch"
    model_cfg = ModelConfig(arch=arch, **{**config.get("model", {}), **own.get("model", {})})
    train_cfg = TrainConfig(**{**config.get("train", {}), **own.get("train", {})})
    plan = settings.plan
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"model": asdict(model_cfg), "train": asdict(train_cfg), "data": data.info,
                           "vocab": data.vocab, "train_reviews": data.counts["train"],
                           "torch_threads": plan.torch_threads},
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.workers, use_gpu=plan.gpus_per_worker > 0,
            resources_per_worker={"CPU": plan.cpus_per_worker, **({"GPU": plan.gpus_per_worker} if plan.gpus_per_worker else {})}),
        run_config=ray.train.RunConfig(
            name=f"{model_cfg.arch}-{tune.get_context().get_trial_id()}",
            storage_path=settings.train_storage,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="max"),  # + the latest
            callbacks=[TuneReportCallback()]),  # every epoch's metrics show up in Tune as they happen
        datasets={"train": data.dataset("train"), "val": data.dataset("val")},
        dataset_config=ray.train.DataConfig(execution_options=_ordered()),
    )
    result = trainer.fit()
    best, best_metrics = max(result.best_checkpoints, key=lambda pair: pair[1][METRIC])
    with result.checkpoint.as_directory() as latest:
        history = load_checkpoint(latest).meta["history"]
    with best.as_directory() as directory:
        loaded = load_checkpoint(directory)
    test = test_checkpoint(loaded, data, threads=plan.torch_threads)
    return {
        "arch": model_cfg.arch, METRIC: best_metrics[METRIC], "best_epoch": best_metrics["epoch"],
        "epochs": len(history), "test_accuracy": test.accuracy, "test_loss": test.mean_loss,
        "test_reviews": test.count, "train_seconds": sum(h["epoch_seconds"] for h in history),
        "samples_per_second": sum(h["samples_per_second"] for h in history) / len(history),
        "parameters": count_parameters(loaded.build_model()), "checkpoint": best.path,
        "history_json": json.dumps(history),  # a string: Tune's TensorBoard logger skips it, a list it warns on
    }


def _ordered():
    """Ray Data's default ingest options, with blocks kept in order: with the seeded shuffle buffer, the
    same seed then gives the same batches, so a rerun reproduces its metrics."""
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def run_experiment(storage: Storage, name: str, trainable_args: tuple[DataSpec, TrialSettings],
                   param_space: dict | None, resume: bool, **tune_config) -> tune.ResultGrid:
    """Start the experiment `<storage>/<name>` (or, with `resume`, continue it) and wait for every trial."""
    data, settings = trainable_args
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, settings=settings),
                                    {"CPU": DRIVER_CPUS})  # a trial's driver only waits on its TorchTrainer
    path = storage.join(name)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise UserError(f"--resume: there is no run to resume at {path} (check --storage and --name)")
        log.info("resuming %s: finished trials are kept, unfinished ones continue from their checkpoints", path)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True).fit()
    if storage.exists(name):
        raise UserError(f"--name {name}: {path} already exists; add --resume to continue it, or choose another --name")
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", max_concurrent_trials=settings.plan.concurrent_trials,
                                    **tune_config),
        run_config=tune.RunConfig(name=name, storage_path=storage.root,
                                  failure_config=tune.FailureConfig(max_failures=settings.max_failures)))
    return tuner.fit()


def finished_trials(grid: tune.ResultGrid) -> tuple[list[dict], list[str], list[str]]:
    """The final results of the trials that completed; a line per trial that failed; one per trial that
    was stopped before it finished (an interrupted run)."""
    results, failed, unfinished = [], [], []
    for result in grid:
        arch = (result.config or {}).get("arch", "?")
        if result.error is not None:
            failed.append(f"{arch}: {result.error} ({result.path})")
        elif "test_accuracy" not in (result.metrics or {}):
            unfinished.append(arch)
        else:
            history = json.loads(result.metrics["history_json"])
            results.append({**result.metrics, "history": history, "config": result.config})
    return results, failed, unfinished


def default_name(prefix: str = "train") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
