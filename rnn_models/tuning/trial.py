"""One trial: Ray Tune runs the architectures as parallel trials (tuning/experiment.py), each trained by one
worker or by a Ray Train worker group of several (DDP).

    Tuner ── trial (run_trial, the worker's resources): the worker, in the trial's process (LoneWorker)
    Tuner ── trial (run_trial, ~0 CPU, on the head) ── TorchTrainer ── workers 0..N-1 (train_loop_per_worker, DDP)
    then the worker(s) score the test split with the best epoch's weights by val accuracy (or the last)

A lone worker needs no Train run: its trial reports to Tune and keeps its checkpoints in the trial's folder,
and Tune retries a failed trial from its last checkpoint. A worker group's Train run is named after the trial
(`train/<arch>-<trial id>`), so that a restarted worker group, a retried trial or a resumed experiment finds its
checkpoints and continues instead of starting over. A trial's Tune config is its architecture and, in a
search, its sampled values; what it trains is resolved from the run's `Recipe` (the one merge of options) once
(`trial_configs`) and carried to its worker(s) as dataclasses. The configs and the epochs' history travel in
the checkpoints' meta, which the report reads back (`read_meta`).
"""

import logging
import os
from dataclasses import dataclass

import ray
import ray.train
from ray import tune
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.tune.integration.ray_train import TuneReportCallback

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.data.prepared import SPLITS
from rnn_models.presets import Recipe
from rnn_models.resources import DRIVER_RESOURCES, Plan
from rnn_models.training.ingest import DataSpec, Shares
from rnn_models.training.loop import METRIC
from rnn_models.training.worker import LoneWorker, TrialInputs, train_and_test, train_loop_per_worker

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


def trial_configs(config: dict, recipe: Recipe) -> tuple[ModelConfig, TrainConfig]:
    """What a trial of Tune `config` (its architecture and any sampled values) trains."""
    return recipe.resolve(config["arch"], {k: v for k, v in config.items() if k != "arch"})


def run_trial(config: dict, data: DataSpec, settings: TrialSettings, recipe: Recipe) -> dict:
    """One trial: train one architecture (in this process, or with a TorchTrainer), then score the test split.
    Its result: the scores and the tested checkpoint, whose meta holds the configs and history
    (`experiment.finished_trials` reads them)."""
    model_cfg, train_cfg = trial_configs(config, recipe)
    inputs = TrialInputs(
        model_cfg,
        train_cfg,
        data.info,
        data.vocab,
        train_reviews=data.counts["train"],
        torch_threads=settings.plan.torch_threads,
        shares=None if settings.lone else data.shares(settings.plan.workers),
    )
    if settings.lone:
        final = train_and_test(inputs, LoneWorker({split: data.dataset(split) for split in SPLITS}))
        checkpoint = tune.get_checkpoint()  # the one just reported with the test scores
    else:
        # Train's preemption watcher is one more process per trial: a lost node already costs at most its
        # epoch (a checkpoint every epoch). Train hands this setting on from here to its controller.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        result = _trainer(inputs, data, settings).fit()
        final, checkpoint = (
            result.metrics,
            result.checkpoint,
        )  # the workers' last report: the test split's scores
    return {
        "arch": model_cfg.arch,
        METRIC: final[METRIC],
        "tested_epoch": final["tested_epoch"],
        "checkpoint": _uri(checkpoint),
        **{k: final[k] for k in ("test_accuracy", "test_loss", "test_reviews", "parameters")},
    }


def is_final(result: dict) -> bool:
    """Whether `result` is `run_trial`'s own: trained and tested to the end (it names the tested checkpoint). A
    trial stopped early, or interrupted, has none."""
    return "checkpoint" in result


def _uri(checkpoint: ray.train.Checkpoint) -> str:
    """Where a checkpoint lives, as a path or URI that `rnn-models evaluate/predict --checkpoint` takes."""
    scheme = {"local": "", "gcs": "gs://"}.get(
        checkpoint.filesystem.type_name, f"{checkpoint.filesystem.type_name}://"
    )
    return scheme + checkpoint.path


def _trainer(inputs: TrialInputs, data: DataSpec, settings: TrialSettings) -> TorchTrainer:
    plan = settings.plan
    gpus = {"GPU": plan.gpus_per_worker} if plan.gpus_per_worker else {}
    # splits in the object store go to the workers in their config (shares); streamed ones via Train
    streamed = {} if inputs.shares else {split: data.dataset(split) for split in SPLITS}
    return _TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"inputs": inputs},
        scaling_config=ray.train.ScalingConfig(
            num_workers=plan.workers,
            use_gpu=bool(gpus),
            resources_per_worker={"CPU": plan.cpus_per_worker, **gpus},
        ),
        run_config=ray.train.RunConfig(
            name=f"{inputs.model.arch}-{tune.get_context().get_trial_id()}",  # stable: a resumed trial finds it
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
