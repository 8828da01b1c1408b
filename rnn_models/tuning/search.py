"""`rnn-models tune`: a Ray Tune search per architecture; ASHA stops weak configurations early, each judged
against the other configurations of its own architecture.

The search space (tuning/space.py) maps option names to distributions. Every architecture gets
`--num-samples` configurations, drawn from `--seed` (the same seed draws the same ones). The best of each (by val accuracy at any epoch) goes into a preset file that `rnn-models train
--preset FILE` takes.
"""

import dataclasses
import logging
from pathlib import Path

from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from rnn_models.config import RunConfig, SearchConfig
from rnn_models.errors import UserError
from rnn_models.presets import PREPARE_KEYS, Preset, Recipe, save_preset
from rnn_models.storage import is_uri
from rnn_models.training.loop import METRIC
from rnn_models.tuning.experiment import finished_trials
from rnn_models.tuning.schedulers import PerArchASHA
from rnn_models.tuning.session import fit, report, require_batches, start
from rnn_models.tuning.space import largest_value, load_search_space, tune_space
from rnn_models.tuning.trial import trial_configs, trial_space

log = logging.getLogger(__name__)


def search(
    run: RunConfig, recipe: Recipe, cfg: SearchConfig, resume: bool = False, address: str | None = None
) -> Path:
    """Search `cfg.search_space` around `recipe` (its sampled values win over it); returns the preset file."""
    space, num_samples, scheduler, out = (
        load_search_space(cfg.search_space),
        cfg.num_samples,
        cfg.scheduler,
        cfg.out,
    )
    if not out and is_uri(run.storage) and not run.storage.startswith("file://"):
        raise UserError(
            f"--out is needed when --storage is remote ({run.storage}): the preset is a local file"
        )
    session = start(run, recipe, len(run.arch_list) * num_samples, resume, address, prefix="tune")
    base = {
        arch: train_cfg for arch, (_, train_cfg) in session.configs.items()
    }  # training options before sampling
    require_batches(
        session, {arch: largest_value(space, "batch_size", t.batch_size) for arch, t in base.items()}
    )
    epochs = max(largest_value(space, "epochs", t.epochs) for t in base.values())
    # ASHA judges a trial by its epochs (1, 4, 16, ... up to the last); the workers' test report and the trial's
    # final result carry no epoch, so a trial that survives its last epoch is always tested and reported.
    schedulers = {
        "asha": PerArchASHA(time_attr="epoch", max_t=epochs, grace_period=1, stop_last_trials=False),
        "fifo": FIFOScheduler(),
    }
    sampler = BasicVariantGenerator(random_state=base[run.arch_list[0]].seed)
    grid = fit(
        session,
        trial_space(run.arch_list, tune_space(space)),
        num_samples=num_samples,
        scheduler=schedulers[scheduler],
        search_alg=sampler,
    )
    results, failed = finished_trials(grid)  # trials ASHA stopped early have no test result: expected
    if failed:
        log.warning("%d trial(s) failed:\n  %s", len(failed), "\n  ".join(failed))
    if results:
        report(session, results, {"search_space": space})
    best = _best_per_arch(grid, session.recipe)
    found = Preset(
        name=f"{session.name}-best",
        about=f"best val accuracy per architecture in `rnn-models tune` run "
        f"{session.name} ({num_samples} samples each, {scheduler})",
        prepare={k: session.data.manifest["options"][k] for k in PREPARE_KEYS},
        archs={arch: {"model": b["model"], "train": b["train"]} for arch, b in best.items()},
    )
    path = (
        Path(out)
        if out
        else Path(session.storage.join(session.name, "best-preset.json").removeprefix("file://"))
    )
    save_preset(found, path)
    for arch, b in best.items():
        chosen = {k: b[section][k] for section in ("model", "train") for k in space if k in b[section]}
        log.info("best %s: val accuracy %.4f with %s", arch, b[METRIC], chosen)
    log.info("best configurations written to %s (use: rnn-models train --preset %s)", path, path)
    return path


def _best_per_arch(grid: tune.ResultGrid, recipe: Recipe) -> dict:
    """Per arch: the configs of the trial with the best val accuracy reported at any epoch (trials ASHA stopped
    early count too), resolved from its Tune config as the trial resolved them."""
    best = {}
    for result in grid:
        frame = result.metrics_dataframe
        if result.config is None or frame is None or METRIC not in frame:
            continue
        arch, score = result.config["arch"], float(frame[METRIC].max())
        if arch not in best or score > best[arch][METRIC]:
            model, train = trial_configs(result.config, recipe)
            best[arch] = {
                METRIC: score,
                "model": {k: v for k, v in dataclasses.asdict(model).items() if k != "arch"},
                "train": dataclasses.asdict(train),
            }
    if not best:
        raise UserError("the search finished no epoch of any trial; see the errors above")
    return best
