"""Ray Tune runs the architectures as parallel trials; each trial drives its own Ray Train run.

    Tuner ── trial (run_trial, ~0 CPU) ── TorchTrainer ── worker 0..N-1 (train_loop_per_worker, DDP)
                                       └─ best checkpoint by val accuracy (or the last) ── tested on the test split

A trial's Train run is named after the trial (`<arch>-<trial id>`), so that a restarted worker group,
a retried trial or a resumed experiment finds its checkpoints and continues instead of starting over.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from rnn_models.cluster import verbose
from rnn_models.config import ModelConfig, TrainConfig, trial_configs
from rnn_models.errors import UserError
from rnn_models.models import count_parameters
from rnn_models.resources import DRIVER_RESOURCES, Plan
from rnn_models.storage import Storage
from rnn_models.training.checkpoint import META_FILE, load_checkpoint
from rnn_models.training.evaluation import score_checkpoint
from rnn_models.training.ingest import DataSpec, ordered_ingest
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
    """One trial: train one architecture with a TorchTrainer, then test its best (or last) checkpoint."""
    model_cfg, train_cfg = trial_configs(config)
    result = _trainer(model_cfg, train_cfg, data, settings).fit()
    with result.checkpoint.as_directory() as latest:  # its history: every epoch, not only the best's
        history = json.loads((Path(latest) / META_FILE).read_text())["history"]
    if train_cfg.test_checkpoint == "last":  # the notebook scores the weights after its last epoch
        best, best_metrics = result.checkpoint, history[-1]
    else:
        best, best_metrics = max(result.best_checkpoints, key=lambda pair: pair[1][METRIC])
    plan = settings.plan  # scored with a worker's resources (its GPU share included), not the driver's,
    # outside the trial's placement group, which holds only the driver's sliver of CPU
    score = ray.remote(_score).options(num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker,
                                       scheduling_strategy="DEFAULT")
    test, parameters = ray.get(score.remote(best, data, plan.torch_threads))
    return {
        "arch": model_cfg.arch, METRIC: best_metrics[METRIC], "best_epoch": best_metrics["epoch"],
        "epochs": len(history), "test_accuracy": test.accuracy, "test_loss": test.mean_loss,
        "test_reviews": test.count, "train_seconds": sum(h["epoch_seconds"] for h in history),
        "samples_per_second": sum(h["samples_per_second"] for h in history) / len(history),
        "parameters": parameters, "checkpoint": _uri(best),
        "history_json": json.dumps(history),  # a string: Tune's TensorBoard logger skips it, a list it warns on
    }


def _score(checkpoint: ray.train.Checkpoint, data: DataSpec, threads: int):
    with checkpoint.as_directory() as directory:
        loaded = load_checkpoint(directory)
    return score_checkpoint(loaded, data, threads=threads), count_parameters(loaded.model)


def _uri(checkpoint: ray.train.Checkpoint) -> str:
    """Where a checkpoint lives, as a path or URI that `rnn-models evaluate/predict --checkpoint` takes."""
    scheme = {"local": "", "gcs": "gs://"}.get(checkpoint.filesystem.type_name, f"{checkpoint.filesystem.type_name}://")
    return scheme + checkpoint.path


def _trainer(model_cfg: ModelConfig, train_cfg: TrainConfig, data: DataSpec, settings: TrialSettings) -> TorchTrainer:
    plan = settings.plan
    gpus = {"GPU": plan.gpus_per_worker} if plan.gpus_per_worker else {}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"model": asdict(model_cfg), "train": asdict(train_cfg), "data": data.info,
                           "vocab": data.vocab, "train_reviews": data.counts["train"],
                           "torch_threads": plan.torch_threads},
        scaling_config=ray.train.ScalingConfig(num_workers=plan.workers, use_gpu=bool(gpus),
                                               resources_per_worker={"CPU": plan.cpus_per_worker, **gpus}),
        run_config=ray.train.RunConfig(
            name=f"{model_cfg.arch}-{tune.get_context().get_trial_id()}",  # stable: a resumed trial finds it
            storage_path=settings.train_storage,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=1, checkpoint_score_attribute=METRIC, checkpoint_score_order="max"),  # + the latest
            callbacks=[TuneReportCallback()]),  # every epoch's metrics show up in Tune as they happen
        datasets={"train": data.dataset("train"), "val": data.dataset("val")},
        dataset_config=ray.train.DataConfig(execution_options=ordered_ingest()),
    )


class ProgressLines(tune.Callback):
    """One line per architecture and epoch as the results arrive, one when a trial ends (Tune's status
    table only with --verbose). `by_trial`: name trials by id too (a search runs several per arch)."""

    def __init__(self, by_trial: bool = False):
        self.by_trial = by_trial

    def _name(self, trial) -> str:
        arch = trial.config.get("arch", "?")
        return f"{arch} {trial.trial_id}" if self.by_trial else arch

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result:
            epochs = trial_configs(trial.config)[1].epochs
            log.info("%s epoch %d/%d: train accuracy %.4f, val accuracy %.4f (%.0f s, %.0f samples/s)",
                     self._name(trial), result["epoch"], epochs, result["train_accuracy"], result["val_accuracy"],
                     result["epoch_seconds"], result["samples_per_second"])

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if "test_accuracy" in result:
            log.info("%s finished: test accuracy %.4f (checkpoint of epoch %d)", self._name(trial),
                     result["test_accuracy"], result["best_epoch"])

    def on_trial_error(self, iteration, trials, trial, **info):
        log.warning("%s failed; details in %s", self._name(trial), trial.path)


def run_experiment(storage: Storage, name: str, data: DataSpec, settings: TrialSettings, param_space: dict | None,
                   resume: bool, **tune_config) -> tune.ResultGrid:
    """Start the experiment `<storage>/<name>` (or, with `resume`, continue it) and wait for every trial."""
    # A trial's driver only waits on its TorchTrainer, on the head: it and the Train controller that Ray
    # places beside it survive the loss of a (preemptible) worker node.
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data, settings=settings), DRIVER_RESOURCES)
    path = storage.join(name)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise UserError(f"--resume: there is no run to resume at {path} (check --storage and --name)")
        log.info("resuming %s: finished trials are kept, unfinished ones continue from their checkpoints, "
                 "with the options the run started with", path)
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True).fit()
    if storage.exists(name):
        raise UserError(f"--name {name}: {path} already exists; add --resume to continue it, or choose another --name")
    tuner = tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(metric=METRIC, mode="max", max_concurrent_trials=settings.plan.concurrent_trials,
                                    **tune_config),
        # One failure budget: Train restarts a trial's worker group up to --max-failures times, each from
        # the last checkpoint; a trial that still fails has used it up, and Tune does not retry it again.
        run_config=tune.RunConfig(name=name, storage_path=storage.root, verbose=1 if verbose() else 0,
                                  callbacks=[ProgressLines(by_trial="num_samples" in tune_config)],
                                  failure_config=tune.FailureConfig(max_failures=0)))
    return tuner.fit()


def finished_trials(grid: tune.ResultGrid) -> tuple[list[dict], list[str]]:
    """The final results of the trials that completed, and a line per trial that failed. Trials a scheduler
    stopped early, or an interruption left unfinished, are in neither."""
    results, failed = [], []
    for result in grid:
        if result.error is not None:
            arch = (result.config or {}).get("arch", "?")
            failed.append(f"{arch}: {_reason(result.error)} ({result.path})")
        elif "test_accuracy" in (result.metrics or {}):
            history = json.loads(result.metrics["history_json"])
            results.append({**result.metrics, "history": history, "config": result.config})
    return results, failed


def interrupted(experiment_path: str) -> bool:
    """Whether Tune stopped (Ctrl-C, SIGTERM) before every trial ended. The experiment state it saves last,
    before it stops the running trials, still lists them as running; an error or an early stop ends a trial."""
    trials = tune.ExperimentAnalysis(experiment_path).trials
    return any(trial.status not in ("TERMINATED", "ERROR") for trial in trials)


def _reason(error: Exception) -> str:
    """A failed trial in one line: the user's mistake if one is inside Ray's wrappers, else the first line."""
    seen = error
    while seen is not None:
        if isinstance(seen, UserError):
            return str(seen).splitlines()[-1]
        seen = seen.__cause__ or seen.__context__
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def default_name(prefix: str = "train") -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
