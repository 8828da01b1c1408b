"""The trial wiring: Ray Tune runs the architectures as parallel trials, each trained by one worker or by a
Ray Train worker group of several (DDP).

    Tuner ── trial (run_trial, the worker's resources): the worker, in the trial's process (LoneWorker)
    Tuner ── trial (run_trial, ~0 CPU, on the head) ── TorchTrainer ── workers 0..N-1 (train_loop_per_worker, DDP)
    then the worker(s) score the test split with the best epoch's weights by val accuracy (or the last)

A lone worker needs no Train run: its trial reports to Tune and keeps its checkpoints in the trial's folder,
and Tune retries a failed trial from its last checkpoint. A worker group's Train run is named after the trial
(`train/<arch>-<trial id>`), so that a restarted worker group, a retried trial or a resumed experiment finds its
checkpoints and continues instead of starting over. A trial's Tune config is its architecture and, in a
search, its sampled values; what it trains is resolved from the run's `Recipe` (the one merge of options) and
carried in every result it reports (`configs_json`).
"""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.tune.integration.ray_train import TuneReportCallback

from rnn_models.cluster import verbose
from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.data.prepared import SPLITS
from rnn_models.errors import UserError
from rnn_models.presets import Recipe
from rnn_models.resources import DRIVER_RESOURCES, Plan
from rnn_models.storage import Storage
from rnn_models.training.ingest import DataSpec, Shares
from rnn_models.training.loop import METRIC
from rnn_models.training.worker import LoneWorker, train_and_test, train_loop_per_worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSettings:
    """What every trial shares and is not a hyperparameter (recomputed when a run resumes)."""

    plan: Plan
    train_storage: str  # where the trials' Train runs keep their checkpoints (worker groups only)
    max_failures: int

    @property
    def lone(self) -> bool:
        """Whether each trial trains in its own process (one worker) rather than through a Train worker group."""
        return self.plan.workers == 1

    def trial_resources(self) -> dict:
        """What a trial holds: a lone worker's CPU and GPU, or a sliver of the head beside its worker group."""
        if not self.lone:
            return DRIVER_RESOURCES
        gpus = {"GPU": self.plan.gpus_per_worker} if self.plan.gpus_per_worker else {}
        return {"CPU": self.plan.cpus_per_worker, **gpus}


def trial_space(archs: list[str], sampled: dict | None = None) -> dict:
    """Tune's param_space: the architecture (one trial each, or `num_samples` in a search) and the sampled options."""
    return {"arch": tune.grid_search(archs), **(sampled or {})}


def run_trial(config: dict, data: DataSpec, settings: TrialSettings, recipe: Recipe) -> dict:
    """One trial: train one architecture (in this process, or with a TorchTrainer), then score the test split."""
    model_cfg, train_cfg = recipe.resolve(config["arch"], {k: v for k, v in config.items() if k != "arch"})
    loop_config = {
        "model": asdict(model_cfg),
        "train": asdict(train_cfg),
        "data": data.info,
        "vocab": data.vocab,
        "train_reviews": data.counts["train"],
        "torch_threads": settings.plan.torch_threads,
        "shares": None if settings.lone else data.shares(settings.plan.workers),
    }
    if settings.lone:
        final = train_and_test(loop_config, LoneWorker({split: data.dataset(split) for split in SPLITS}))
        checkpoint = tune.get_checkpoint()  # the one just reported with the test scores
    else:
        # Train's preemption watcher is one more process per trial: a lost node already costs at most its
        # epoch (a checkpoint every epoch). Train hands this setting on from here to its controller.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        result = _trainer(loop_config, model_cfg.arch, data, settings).fit()
        final, checkpoint = (
            result.metrics,
            result.checkpoint,
        )  # the workers' last report: the test split's scores
    history = json.loads(final["history_json"])
    return {
        "arch": model_cfg.arch,
        METRIC: final[METRIC],
        "best_epoch": final["tested_epoch"],
        "epochs": len(history),
        "train_seconds": sum(h["epoch_seconds"] for h in history),
        "samples_per_second": sum(h["samples_per_second"] for h in history) / len(history),
        "checkpoint": _uri(checkpoint),
        **{
            k: final[k]
            for k in (
                "test_accuracy",
                "test_loss",
                "test_reviews",
                "parameters",
                "history_json",
                "configs_json",
            )
        },  # strings: Tune's TensorBoard logger skips them, lists it warns on
    }


def _uri(checkpoint: ray.train.Checkpoint) -> str:
    """Where a checkpoint lives, as a path or URI that `rnn-models evaluate/predict --checkpoint` takes."""
    scheme = {"local": "", "gcs": "gs://"}.get(
        checkpoint.filesystem.type_name, f"{checkpoint.filesystem.type_name}://"
    )
    return scheme + checkpoint.path


def _trainer(loop_config: dict, arch: str, data: DataSpec, settings: TrialSettings) -> TorchTrainer:
    plan = settings.plan
    gpus = {"GPU": plan.gpus_per_worker} if plan.gpus_per_worker else {}
    # splits in the object store go to the workers in their config (shares); streamed ones via Train
    streamed = {} if loop_config["shares"] else {split: data.dataset(split) for split in SPLITS}
    return _TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.workers,
            use_gpu=bool(gpus),
            resources_per_worker={"CPU": plan.cpus_per_worker, **gpus},
        ),
        run_config=ray.train.RunConfig(
            name=f"{arch}-{tune.get_context().get_trial_id()}",  # stable: a resumed trial finds it
            storage_path=settings.train_storage,
            failure_config=ray.train.FailureConfig(max_failures=settings.max_failures),
            # the latest only: it holds the weights to test too (or is the tested checkpoint, at the end)
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            callbacks=[TuneReportCallback()],
        ),  # every epoch's metrics show up in Tune as they happen
        datasets=streamed,
        dataset_config=Shares(plan.workers),  # each rank gets its share
    )


class _TorchTrainer(TorchTrainer):
    """A TorchTrainer that starts two actors fewer per run: each is a Python process costing seconds of CPU at
    start, and four trials start theirs at once on a small machine. Ray 2.60 adds both unconditionally in this
    private hook (the version is pinned in pyproject.toml):
    - the dataset manager, for a run given no datasets (its workers get their shares in their config);
    - the placement-group cleaner, a detached actor that removes the workers' placement group should the
      controller die abruptly; it dies with the trial that owns it, and a placement group with its creator."""

    def _create_default_callbacks(self):
        unused = (
            (PlacementGroupCleanerCallback,)
            if self.datasets
            else (PlacementGroupCleanerCallback, DatasetsCallback)
        )
        return [c for c in super()._create_default_callbacks() if not isinstance(c, unused)]


class ProgressLines(tune.Callback):
    """Progress as the results arrive: a line for each trial's first and last epochs, and between them one line
    for all trials at most every `every` seconds, with the latest epoch each has reported since the last one
    (every epoch on its own line with --verbose); then a line when a trial ends. Tune's status table only with
    --verbose. `by_trial`: name trials by id too (a search runs several per arch)."""

    def __init__(self, by_trial: bool = False, every: float = 60):
        self.by_trial, self.every = by_trial, 0 if verbose() else every
        self.latest: dict[str, str] = {}  # trial -> its latest epoch not printed yet
        self.printed = time.monotonic()  # when the last line for all trials was printed

    def _name(self, trial) -> str:
        name = trial.config.get("arch", "?") + (
            f" seed {trial.config['seed']}" if "seed" in trial.config else ""
        )
        return f"{name} {trial.trial_id}" if self.by_trial else name

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result:
            return
        name, epoch, epochs = self._name(trial), result["epoch"], reported_configs(result)[1].epochs
        if not self.every or epoch in (1, epochs):
            self.latest.pop(name, None)
            log.info(
                "%s epoch %d/%d: train accuracy %.4f, val accuracy %.4f (%.0f s, %.0f samples/s)",
                name,
                epoch,
                epochs,
                result["train_accuracy"],
                result["val_accuracy"],
                result["epoch_seconds"],
                result["samples_per_second"],
            )
            return
        self.latest[name] = f"{name} {epoch}/{epochs} (val {result['val_accuracy']:.4f})"
        now = time.monotonic()
        if now - self.printed >= self.every:
            log.info("epochs: %s", ", ".join(self.latest.values()))
            self.latest, self.printed = {}, now

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        if "best_epoch" in result:  # the trial's own final result (a trial stopped early has none)
            log.info(
                "%s finished: test accuracy %.4f (checkpoint of epoch %d)",
                self._name(trial),
                result["test_accuracy"],
                result["best_epoch"],
            )

    def on_trial_error(self, iteration, trials, trial, **info):
        log.warning("%s failed; details in %s", self._name(trial), trial.path)


def run_experiment(
    storage: Storage,
    name: str,
    data: DataSpec,
    settings: TrialSettings,
    recipe: Recipe,
    param_space: dict,
    resume: bool,
    **tune_config,
) -> tune.ResultGrid:
    """Start the experiment `<storage>/<name>` (or, with `resume`, continue it) and wait for every trial."""
    # A worker group's trial only waits on its TorchTrainer, on the head: it and the Train controller that Ray
    # places beside it survive the loss of a (preemptible) worker node. A lone worker's trial is its worker.
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, data=data, settings=settings, recipe=recipe),
        settings.trial_resources(),
    )
    # A lone worker's trial keeps its latest checkpoint only (num_to_keep=1 below), so Tune saves the experiment's
    # state with every checkpoint, as it must, and would warn each time that it does so often.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    path = storage.join(name)
    if resume:
        if not tune.Tuner.can_restore(path):
            raise UserError(f"--resume: there is no run to resume at {path} (check --storage and --name)")
        log.info(
            "resuming %s: finished trials are kept, unfinished ones continue from their checkpoints, "
            "with the options the run started with",
            path,
        )
        return tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True).fit()
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", max_concurrent_trials=settings.plan.concurrent_trials, **tune_config
        ),
        # One failure budget of --max-failures restarts, each from the last checkpoint: Tune's for a lone
        # worker's trial, else Train's for the worker group (a trial that still fails has used it up).
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage.root,
            verbose=1 if verbose() else 0,
            callbacks=[ProgressLines(by_trial="num_samples" in tune_config)],
            failure_config=tune.FailureConfig(settings.max_failures if settings.lone else 0),
            # a lone worker's latest only: it holds the weights to test too (or is the
            # tested checkpoint, at the end)
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    return tuner.fit()


def finished_trials(grid: tune.ResultGrid) -> tuple[list[dict], list[str]]:
    """The final results of the trials that completed, and a line per trial that failed. Trials a scheduler
    stopped early, or an interruption left unfinished, are in neither."""
    results, failed = [], []
    for result in grid:
        if result.error is not None:
            arch = (result.config or {}).get("arch", "?")
            failed.append(f"{arch}: {_reason(result.error)} ({result.path})")
        elif "best_epoch" in (result.metrics or {}):  # run_trial's own result: trained and tested to the end
            history = json.loads(result.metrics["history_json"])
            results.append(
                {**result.metrics, "history": history, **json.loads(result.metrics["configs_json"])}
            )
    return results, failed


def reported_configs(result: dict) -> tuple[ModelConfig, TrainConfig]:
    """The configs a trial trained, from any result it reported (each carries them)."""
    configs = json.loads(result["configs_json"])
    return ModelConfig(**configs["model"]), TrainConfig(**configs["train"])


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
