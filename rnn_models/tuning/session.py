"""A run's session, shared by `train` and `tune`: its inputs checked, the cluster joined and sized, the
experiment run (or resumed), an interruption turned into the command that continues it, the report written.

The run folder `<storage>/<name>/` keeps `recipe.json`, the options the run started with, so that `--resume`
continues with those whatever the command line says now.
"""

import json
import logging
import os
import shlex
import sys
from dataclasses import asdict, dataclass, replace

from ray import tune

from rnn_models.cluster import alive_nodes, connect, release_gpus, require_shared_storage, wait_for_gpus
from rnn_models.config import ModelConfig, RunConfig, TrainConfig
from rnn_models.data.prepared import SPLITS, PreparedData, open_prepared
from rnn_models.errors import UserError
from rnn_models.models import training_bytes
from rnn_models.presets import Recipe
from rnn_models.report import write_report
from rnn_models.resources import Plan, cluster_plan
from rnn_models.stalls import StallWatch
from rnn_models.storage import Storage
from rnn_models.training.ingest import DataSpec
from rnn_models.tuning.experiment import default_name, interrupted, run_experiment
from rnn_models.tuning.trial import TrialSettings

log = logging.getLogger(__name__)
RECIPE_FILE = "recipe.json"


def resume_command(name: str) -> str:
    """The command line that continues this run: the same one, pinned to its name, plus --resume."""
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    if "--name" not in argv:
        argv += ["--name", name]
    script = sys.argv[0]  # jobs/train_all.py, or the package (`rnn-models`, `python -m rnn_models`)
    program = (
        f"python {script}" if script.endswith(".py") and not script.endswith("__main__.py") else "rnn-models"
    )
    return f"{program} {shlex.join(argv)} --resume"


@dataclass(frozen=True)
class Session:
    """A run whose inputs are checked, on a connected cluster, with its resources sized."""

    run: RunConfig
    recipe: Recipe  # on --resume, the one the run started with
    data: PreparedData
    storage: Storage
    name: str
    plan: Plan
    resume: bool
    configs: dict[
        str, tuple[ModelConfig, TrainConfig]
    ]  # per architecture, the recipe resolved (before sampling)

    @property
    def settings(self) -> TrialSettings:
        return TrialSettings(self.plan, self.storage.join(self.name, "train"), self.run.max_failures)


def start(
    run: RunConfig,
    recipe: Recipe,
    n_trials: int,
    resume: bool = False,
    address: str | None = None,
    prefix: str = "train",
) -> Session:
    """Check the data and storage (before a cluster starts), connect, and size `n_trials` trials."""
    data = open_prepared(run.data, verify=run.verify)
    storage = Storage(run.storage)
    storage.check_writable()
    name = run.name or default_name(prefix)
    if resume:
        recipe = _started_with(storage, name, recipe)
    elif storage.exists(name):
        raise UserError(
            f"--name {name}: {storage.join(name)} already exists; add --resume to continue it, or "
            "choose another --name"
        )
    configs = {arch: recipe.resolve(arch) for arch in run.arch_list}
    joining = address or os.environ.get("RAY_ADDRESS")
    if not joining:  # a local Ray: this machine is the one node
        _require_models_fit(configs, data, _physical_memory(), "this machine")
    connect(address)
    if joining:
        largest = max(n["Resources"].get("memory", 0) for n in alive_nodes())
        _require_models_fit(configs, data, largest, "the largest node (Ray's memory resource)")
    require_shared_storage(storage)
    wait_for_gpus(
        max(1, run.workers_per_trial), run.gpu_wait, run.use_gpu
    )  # a trial's: the others share or queue
    plan = cluster_plan(n_trials, run.workers_per_trial, run.use_gpu)
    if run.torch_threads:
        plan = replace(plan, torch_threads=run.torch_threads)
    log.info("run %s: %s", storage.join(name), plan.describe(n_trials))
    return Session(run, recipe, data, storage, name, plan, resume, configs)


def _require_models_fit(
    configs: dict[str, tuple[ModelConfig, TrainConfig]], data: PreparedData, memory: float, where: str
) -> None:
    """Refuse, before any trial starts, an architecture whose parameters and optimizer state alone exceed `memory`
    bytes: its workers would die allocating them, and be restarted to die again."""
    for arch, (model_cfg, _) in configs.items():
        need = training_bytes(model_cfg, data.vocab_size, data.max_len)
        if need > memory:
            raise UserError(
                f"{arch}: its weights, gradients and Adam's two moments alone need {need / 2**30:,.1f} GiB, "
                f"more than {where} has ({memory / 2**30:,.1f} GiB); lower --hidden-size, "
                "--embedding-size, --bigram-buckets or --vocab-size"
            )


def _physical_memory() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _started_with(storage: Storage, name: str, given: Recipe) -> Recipe:
    """The recipe a run started with, which a resumed run keeps (saying so if the command line's differs)."""
    if not storage.is_file(name, RECIPE_FILE):
        why = (
            f"{storage.join(name)} has no {RECIPE_FILE}: an earlier version made it, or it stopped before its "
            "first trial started"
            if storage.exists(name)
            else f"there is no run to resume at {storage.join(name)}"
        )
        raise UserError(f"--resume: {why} (check --storage and --name)")
    started = Recipe.from_dict(json.loads(storage.read(name, RECIPE_FILE)))
    if started != given:
        log.warning(
            "--resume: continuing with the options the run started with (%s); the command line's preset "
            "or options differ and are not used",
            storage.join(name, RECIPE_FILE),
        )
    return started


def require_batches(session: Session, batch_sizes: dict[str, int]) -> None:
    """Every worker needs at least one full batch of the train split, or its epochs are empty."""
    reviews, workers = session.data.count("train"), session.plan.workers
    for arch, batch_size in batch_sizes.items():
        if reviews < batch_size * workers:
            raise UserError(
                f"--batch-size {batch_size} x {workers} worker(s) is more than the {reviews} train "
                f"reviews ({arch}): lower --batch-size or --workers-per-trial"
            )


def fit(session: Session, param_space: dict, **tune_config) -> tune.ResultGrid:
    """Run (or resume) the experiment; on Ctrl-C or SIGTERM, say how to continue it."""
    data = DataSpec.from_prepared(session.data).load()
    if not session.resume:
        session.storage.write(
            json.dumps(session.recipe.as_dict(), indent=2).encode() + b"\n", session.name, RECIPE_FILE
        )
    with StallWatch(session.run.schedule_timeout, session.run.worker_wait) as stalls:
        try:
            grid = run_experiment(
                session.storage,
                session.name,
                data,
                session.settings,
                session.recipe,
                param_space,
                session.resume,
                **tune_config,
            )
        except KeyboardInterrupt:
            _stopped(session, stalls)
        finally:
            release_gpus()  # the run is over (or stopped): no GPU request left standing
        if interrupted(
            session.storage.join(session.name)
        ):  # Ctrl-C, SIGTERM or a stall: Tune saved the state
            _stopped(session, stalls)
    return grid


def _stopped(session: Session, stalls: StallWatch):
    """A run stopped before its end: a stall is the user's to fix (an error); Ctrl-C or SIGTERM, an interruption."""
    if stalls.reason:
        raise UserError(
            f"{stalls.reason}. Free or add resources (or lower --workers-per-trial), then continue "
            f"this run with: {resume_command(session.name)}"
        )
    log.warning(
        "stopped before every trial finished; continue this run with:\n  %s", resume_command(session.name)
    )
    raise KeyboardInterrupt


def report(session: Session, results: list[dict], config: dict) -> None:
    """Write and print the run's report (each trial's configs as it reported them: what it really ran)."""
    data = session.data
    context = {
        "config": {
            "run": asdict(session.run),
            "preset": session.recipe.preset.as_dict(),
            "options": session.recipe.options,
            **config,
            "plan": session.plan.as_dict(),
        },
        "data": {
            "fingerprint": data.fingerprint,
            "path": data.root,
            "options": data.manifest["options"],
            "reviews": {s: data.count(s) for s in SPLITS},
        },
    }
    table = write_report(session.storage, session.name, results, context)
    print(table, flush=True)
    log.info(
        "report written to %s (results.json, results.md, curves.png)", session.storage.join(session.name)
    )
