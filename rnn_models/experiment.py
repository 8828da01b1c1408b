"""`rnn-models train`: prepared data → one Tune trial per architecture → tested → reported."""

import logging
import shlex
import sys
import time
from dataclasses import asdict, dataclass, replace

from ray import tune

from rnn_models.cluster import connect, one_node, require_shared_storage, wait_for_gpus
from rnn_models.config import RunConfig, TrainConfig, arch_configs
from rnn_models.data.prepared import SPLITS, PreparedData, open_prepared
from rnn_models.errors import UserError
from rnn_models.report import write_report
from rnn_models.presets import Preset
from rnn_models.resources import Plan, cluster_plan
from rnn_models.storage import Storage
from rnn_models.training.ingest import DataSpec
from rnn_models.tuning import TrialSettings, default_name, finished_trials, interrupted, run_experiment

log = logging.getLogger(__name__)


def resume_command(name: str) -> str:
    """The command line that continues this run: the same one, pinned to its name, plus --resume."""
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    if "--name" not in argv:
        argv += ["--name", name]
    script = sys.argv[0]  # jobs/train_all.py, or the package (`rnn-models`, `python -m rnn_models`)
    program = f"python {script}" if script.endswith(".py") and not script.endswith("__main__.py") else "rnn-models"
    return f"{program} {shlex.join(argv)} --resume"


@dataclass(frozen=True)
class Session:
    """A run whose inputs are checked, on a connected cluster, with its resources sized."""

    run: RunConfig
    data: PreparedData
    storage: Storage
    name: str
    plan: Plan

    @property
    def settings(self) -> TrialSettings:
        return TrialSettings(self.plan, self.storage.join(self.name, "train"), self.run.max_failures)


def start(run: RunConfig, n_trials: int, address: str | None = None, prefix: str = "train") -> Session:
    """Check the data and storage (before a cluster starts), connect, and size `n_trials` trials."""
    data = open_prepared(run.data)
    storage = Storage(run.storage)
    storage.check_writable()
    connect(address)
    require_shared_storage(storage)
    name = run.name or default_name(prefix)
    wait_for_gpus(max(1, run.workers_per_trial), run.gpu_wait, run.use_gpu)  # a trial's: the others share or queue
    plan = cluster_plan(n_trials, run.workers_per_trial, run.use_gpu)
    if run.torch_threads:
        plan = replace(plan, torch_threads=run.torch_threads)
    log.info("run %s: %s", storage.join(name), plan.describe(n_trials))
    return Session(run, data, storage, name, plan)


def fit(session: Session, param_space: dict | None, resume: bool, **tune_config) -> tune.ResultGrid:
    """Run (or resume) the experiment; on Ctrl-C or SIGTERM, say how to continue it."""
    data = DataSpec.from_prepared(session.data).load(shared_disk=one_node())
    try:
        return run_experiment(session.storage, session.name, data, session.settings, param_space, resume,
                              **tune_config)
    except KeyboardInterrupt:
        log.warning("interrupted; continue this run with:\n  %s", resume_command(session.name))
        raise


def resolve_trials(preset: Preset, archs: list[str], model: dict | None, train: dict | None) -> dict:
    """Each architecture's resolved model and training configs, as Tune records them."""
    return {arch: arch_configs(*preset.resolve(arch, model, train)) for arch in archs}


def train(run: RunConfig, preset: Preset | None = None, model: dict | None = None, training: dict | None = None,
          resume: bool = False, address: str | None = None) -> dict:
    """Train every architecture of `run` (configs: `preset`, overridden by `model`/`training`) and report."""
    started = time.perf_counter()
    preset = preset or Preset("defaults")
    by_arch = resolve_trials(preset, run.arch_list, model, training)
    session = start(run, len(run.arch_list), address)
    require_batches(session, by_arch)
    grid = fit(session, {"arch": tune.grid_search(run.arch_list), "by_arch": by_arch}, resume)
    stop_if_interrupted(session)
    results, failed = finished_trials(grid)
    wall = time.perf_counter() - started
    log.info("trained and tested in %.1f min (wall, from connecting to Ray to the last test score)", wall / 60)
    if results:
        report(session, results, {"preset": preset.as_dict(), "wall_seconds": wall})
    if failed:
        raise UserError("some trials failed:\n  " + "\n  ".join(failed)
                        + f"\nAfter fixing the cause, continue the run with:\n  {resume_command(session.name)}")
    return {"name": session.name, "path": session.storage.join(session.name), "results": results}


def require_batches(session: Session, by_arch: dict) -> None:
    """Every worker needs at least one full batch of the train split, or its epochs are empty."""
    reviews, workers = session.data.count("train"), session.plan.workers
    for arch, configs in by_arch.items():
        batch_size = configs["train"].get("batch_size", TrainConfig().batch_size)  # a search may sample it
        if reviews < batch_size * workers:
            raise UserError(f"--batch-size {batch_size} x {workers} worker(s) is more than the {reviews} train "
                            f"reviews ({arch}): lower --batch-size or --workers-per-trial")


def stop_if_interrupted(session: Session) -> None:
    if interrupted(session.storage.join(session.name)):  # Ctrl-C or SIGTERM: Tune saved the state
        log.warning("stopped before every trial finished; continue this run with:\n  %s",
                    resume_command(session.name))
        raise KeyboardInterrupt


def report(session: Session, results: list[dict], config: dict) -> None:
    """Write and print the run's report (each trial's configs as Tune recorded them: what it really ran)."""
    data = session.data
    context = {"config": {"run": asdict(session.run), **config, "plan": session.plan.as_dict()},
               "data": {"fingerprint": data.fingerprint, "path": data.root, "options": data.manifest["options"],
                        "reviews": {s: data.count(s) for s in SPLITS}}}
    table = write_report(session.storage, session.name, results, context)
    print(table, flush=True)
    log.info("report written to %s (results.json, results.md, curves.png)", session.storage.join(session.name))
