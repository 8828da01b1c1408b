"""`rnn-models train`: prepared data → one Tune trial per architecture → tested → reported."""

import logging
import time

from ray import tune

from rnn_models.config import RunConfig
from rnn_models.errors import UserError
from rnn_models.presets import Recipe
from rnn_models.tuning.experiment import finished_trials
from rnn_models.tuning.session import fit, report, require_batches, resume_command, start
from rnn_models.tuning.trial import trial_space

log = logging.getLogger(__name__)


def train(run: RunConfig, recipe: Recipe, resume: bool = False, address: str | None = None) -> dict:
    """Train every architecture of `run` by `recipe`, test and report them."""
    started = time.perf_counter()
    seeds = {"seed": tune.grid_search(run.seed_list)} if run.seed_list else None  # a trial per arch and seed
    session = start(run, recipe, len(run.arch_list) * max(1, len(run.seed_list)), resume, address)
    require_batches(session, {arch: train_cfg.batch_size for arch, (_, train_cfg) in session.configs.items()})
    results, failed = finished_trials(fit(session, trial_space(run.arch_list, seeds)))
    wall = time.perf_counter() - started
    log.info(
        "trained and tested in %.1f min (wall, from connecting to Ray to the last test score)", wall / 60
    )
    if results:
        report(session, results, {"wall_seconds": wall})
    if failed:
        raise UserError(
            "some trials failed:\n  "
            + "\n  ".join(failed)
            + f"\nAfter fixing the cause, continue the run with:\n  {resume_command(session.name)}"
        )
    return {"name": session.name, "path": session.storage.join(session.name), "results": results}
