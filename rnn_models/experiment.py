"""`rnn-models train`: prepared data → one Tune trial per architecture → tested → reported."""

import logging
import shlex
import sys
from dataclasses import asdict

from ray import tune

from rnn_models.cluster import connect
from rnn_models.config import RunConfig, TrainConfig
from rnn_models.data.prepared import open_prepared
from rnn_models.errors import UserError
from rnn_models.report import write_report
from rnn_models.resources import cluster_plan
from rnn_models.storage import Storage
from rnn_models.training.ingest import DataSpec
from rnn_models.tuning import TrialSettings, default_name, finished_trials, run_experiment

log = logging.getLogger(__name__)


def resume_command(name: str) -> str:
    """The command line that continues this run: the same one, pinned to its name, plus --resume."""
    argv = [a for a in sys.argv[1:] if a != "--resume"]
    if "--name" not in argv:
        argv += ["--name", name]
    program = f"python {sys.argv[0]}" if sys.argv[0].endswith(".py") else "rnn-models"
    return f"{program} {shlex.join(argv)} --resume"


def train(run: RunConfig, model: dict, train_cfg: TrainConfig, resume: bool = False, address: str | None = None) -> dict:
    """Train every architecture of `run` and write the report; returns the results document's rows."""
    data = open_prepared(run.data)  # bad input fails before a cluster starts
    storage = Storage(run.storage)
    storage.check_writable()
    connect(address)
    name = run.name or default_name()
    plan = cluster_plan(len(run.arch_list), run.workers_per_trial, run.use_gpu)
    log.info("run %s: %s", storage.join(name), plan.describe(len(run.arch_list)))
    settings = TrialSettings(plan, storage.join(name, "train"), run.max_failures)
    param_space = {"arch": tune.grid_search(run.arch_list), "model": model, "train": asdict(train_cfg)}
    try:
        grid = run_experiment(storage, name, (DataSpec.from_prepared(data).in_memory(), settings), param_space, resume)
    except KeyboardInterrupt:
        log.warning("interrupted; continue this run with:\n  %s", resume_command(name))
        raise
    results, failed, unfinished = finished_trials(grid)
    if unfinished and not failed:  # stopped by Ctrl-C or SIGTERM: Tune saved the state
        log.warning("stopped before %s finished; continue this run with:\n  %s", ", ".join(unfinished),
                    resume_command(name))
        raise KeyboardInterrupt
    if results:
        context = {"config": {"run": asdict(run), "model": model, "train": asdict(train_cfg), "plan": plan.as_dict()},
                   "data": {"fingerprint": data.fingerprint, "path": str(data.root),
                            "reviews": {s: data.count(s) for s in ("train", "val", "test")}}}
        table = write_report(storage, name, results, context)
        print(table, flush=True)
        log.info("report written to %s (results.json, results.md, curves.png)", storage.join(name))
    if failed or unfinished:
        raise UserError("some trials failed:\n  " + "\n  ".join(failed + [f"{a}: did not finish" for a in unfinished])
                        + f"\nAfter fixing the cause, continue the run with:\n  {resume_command(name)}")
    return {"name": name, "path": storage.join(name), "results": results}
