"""The experiment: Ray Tune's Tuner over the trials (started, or restored with `--resume`), the progress
lines the console shows while it runs, and what it leaves: the finished trials' results, the failed ones, and
whether it was interrupted.
"""

import logging
import os
import time

from ray import tune

from rnn_models.cluster import verbose
from rnn_models.errors import UserError
from rnn_models.presets import Recipe
from rnn_models.storage import Storage
from rnn_models.training.checkpoint import read_meta
from rnn_models.training.ingest import DataSpec
from rnn_models.training.loop import METRIC
from rnn_models.tuning.trial import TrialSettings, is_final, run_trial

log = logging.getLogger(__name__)


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
        name, epoch, epochs = self._name(trial), result["epoch"], result["planned_epochs"]
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
        if is_final(result):
            log.info(
                "%s finished: test accuracy %.4f (checkpoint of epoch %d)",
                self._name(trial),
                result["test_accuracy"],
                result["tested_epoch"],
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
        elif is_final(result.metrics or {}):
            try:
                meta = read_meta(result.metrics["checkpoint"])  # the tested checkpoint's
            except UserError as e:  # this trial's report is lost, not the others'
                failed.append(f"{result.config.get('arch', '?')}: {e}")
                continue
            history = meta["history"]
            trained = {
                "epochs": len(history),
                "train_seconds": sum(h["epoch_seconds"] for h in history),
                "samples_per_second": sum(h["samples_per_second"] for h in history) / len(history),
            }
            older = {"tested_epoch": result.metrics.get("best_epoch")}  # a trial finished before the rename
            configs = {k: meta[k] for k in ("history", "model", "train")}
            results.append({**older, **trained, **result.metrics, **configs})
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
