"""`rnn-models tune`: a Ray Tune search per architecture; ASHA stops weak configurations early, each judged
against the other configurations of its own architecture.

A search space maps option names (fields of ModelConfig or TrainConfig) to a distribution:

    {"lr": {"loguniform": [1e-4, 1e-2]}, "hidden_size": {"choice": [32, 64, 128]},
     "dropout": {"uniform": [0.0, 0.5]}, "embedding_size": {"choice": [32, 64, 128]}}

Every architecture gets `--num-samples` configurations, drawn from `--seed` (the same seed draws the same
ones). The best of each (by val accuracy at any epoch) goes into a preset file that `rnn-models train
--preset FILE` takes.
"""

import dataclasses
import json
import logging
import math
import pickle
from pathlib import Path

from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from rnn_models.config import ModelConfig, RunConfig, SearchConfig, TrainConfig
from rnn_models.errors import UserError
from rnn_models.presets import MODEL_KEYS, PREPARE_KEYS, TRAIN_KEYS, Preset, Recipe, save_preset
from rnn_models.storage import is_uri
from rnn_models.tuning.session import fit, report, require_batches, start
from rnn_models.tuning.trial import METRIC, finished_trials, reported_configs, trial_space
from rnn_models.validation import key_path, typed_value

log = logging.getLogger(__name__)
DISTRIBUTIONS = {
    "loguniform": tune.loguniform,
    "uniform": tune.uniform,
    "choice": tune.choice,
    "randint": tune.randint,
}
BUILTIN = {
    "lr": {"loguniform": [1e-4, 1e-2]},
    "hidden_size": {"choice": [32, 64, 128]},
    "dropout": {"uniform": [0.0, 0.5]},
    "embedding_size": {"choice": [32, 64, 128]},
}


def load_search_space(spec: str) -> dict:
    """'builtin' or a JSON file; each key must be a model or training option with a known distribution whose
    arguments have the option's type and range."""
    if spec == "builtin":
        return BUILTIN
    where = f"--search-space {spec}"
    try:
        space = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: not a readable JSON file ({e})") from e
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where}: expected a JSON object of options, e.g. {json.dumps(BUILTIN)}")
    for name, distribution in space.items():
        _check_distribution(name, distribution, f"{where}: {key_path('', name)}")
    return space


def _check_distribution(name: str, distribution, where: str) -> None:
    """{"choice": [values...]} or {"uniform"|"loguniform"|"randint": [low, high]}, every value one the
    option may take (the high end is exclusive, as Tune draws it)."""
    cls = ModelConfig if name in MODEL_KEYS else TrainConfig if name in TRAIN_KEYS else None
    if cls is None:
        options = ", ".join(sorted(MODEL_KEYS + TRAIN_KEYS))
        raise UserError(f"{where}: not a model or training option (options: {options})")
    if (
        not isinstance(distribution, dict)
        or len(distribution) != 1
        or next(iter(distribution)) not in DISTRIBUTIONS
    ):
        raise UserError(
            f"{where}: expected one of {', '.join(DISTRIBUTIONS)} with its arguments, e.g. "
            f'{{"{name}": {{"choice": [1, 2]}}}} or {{"{name}": {{"uniform": [0, 1]}}}}'
        )
    ((kind, args),) = distribution.items()
    where, kind_of = key_path(where, kind), next(f.type for f in dataclasses.fields(cls) if f.name == name)
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: expected a non-empty list of values")
        for i, value in enumerate(args):
            typed_value(cls, name, value, f"{where}[{i}]")
        return
    if kind_of is not float and (kind_of is not int or kind != "randint"):
        raise UserError(
            f"{where}: {name} takes {kind_of.__name__} values; use "
            f"{'randint or choice' if kind_of is int else 'choice'}"
        )
    if not isinstance(args, list) or len(args) != 2:
        raise UserError(f"{where}: expected [low, high], got {json.dumps(args)[:60]}")
    low = typed_value(cls, name, args[0], f"{where}[0]")
    high = typed_value(cls, name, args[1], f"{where}[1]", ranged=False)
    if kind == "randint" and not all(
        type(a) is int for a in args
    ):  # a float option may take randint's integers
        raise UserError(f"{where}: expected two integers [low, high], got {json.dumps(args)}")
    if not low < high or (kind == "loguniform" and low <= 0):
        raise UserError(
            f"{where}: expected low < high{' and low > 0' if kind == 'loguniform' else ''} (got {args})"
        )
    largest = high - 1 if kind == "randint" else math.nextafter(high, low)  # the most Tune can draw
    typed_value(cls, name, largest, f"{where}[1] (high is exclusive: draws up to {largest})")


def _largest(space: dict, name: str, otherwise: int) -> int:
    """The largest value of integer option `name` the space can draw (`otherwise` if it does not search it)."""
    if name not in space:
        return otherwise
    ((kind, args),) = space[name].items()
    return max(args) if kind == "choice" else args[1] - 1  # randint: the high end is exclusive


class PerArchASHA(FIFOScheduler):
    """ASHA within each architecture: one ASHAScheduler per arch, so that a trial is stopped early only for
    scoring below the other trials of its own architecture (one shared ASHA stops every MLP trial once the
    LSTMs score higher, and the best MLP configuration it reports is then an accident of its rungs)."""

    def __init__(self, **asha):
        super().__init__()
        self._asha, self._by_arch, self._search = asha, {}, {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        self._metric, self._search = metric, {"metric": metric, "mode": mode, **spec}
        return all(s.set_search_properties(metric, mode, **spec) for s in self._by_arch.values())

    def _of(self, trial) -> ASHAScheduler:
        arch = trial.config["arch"]
        if arch not in self._by_arch:
            self._by_arch[arch] = ASHAScheduler(**self._asha)
            self._by_arch[arch].set_search_properties(**self._search)
        return self._by_arch[arch]

    def on_trial_add(self, tune_controller, trial):
        self._of(trial).on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial):
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        return self._of(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        self._of(trial).on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "\n".join(f"{arch}: {s.debug_string()}" for arch, s in self._by_arch.items())

    def save(self, checkpoint_path: str):
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str):
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def _tune_space(space: dict) -> dict:
    """{option: Tune distribution}."""
    return {
        name: DISTRIBUTIONS[kind](args) if kind == "choice" else DISTRIBUTIONS[kind](*args)
        for name, distribution in space.items()
        for kind, args in distribution.items()
    }


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
        arch: session.recipe.resolve(arch)[1] for arch in run.arch_list
    }  # training options before sampling
    require_batches(session, {arch: _largest(space, "batch_size", t.batch_size) for arch, t in base.items()})
    epochs = max(_largest(space, "epochs", t.epochs) for t in base.values())
    # ASHA judges a trial by its epochs (1, 4, 16, ... up to the last); the workers' test report and the trial's
    # final result carry no epoch, so a trial that survives its last epoch is always tested and reported.
    schedulers = {
        "asha": PerArchASHA(time_attr="epoch", max_t=epochs, grace_period=1, stop_last_trials=False),
        "fifo": FIFOScheduler(),
    }
    sampler = BasicVariantGenerator(random_state=base[run.arch_list[0]].seed)
    grid = fit(
        session,
        trial_space(run.arch_list, _tune_space(space)),
        num_samples=num_samples,
        scheduler=schedulers[scheduler],
        search_alg=sampler,
    )
    results, failed = finished_trials(grid)  # trials ASHA stopped early have no test result: expected
    if failed:
        log.warning("%d trial(s) failed:\n  %s", len(failed), "\n  ".join(failed))
    if results:
        report(session, results, {"search_space": space})
    best = _best_per_arch(grid)
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


def _best_per_arch(grid: tune.ResultGrid) -> dict:
    """Per arch: the configs of the trial with the best val accuracy reported at any epoch (as the trial
    reported them: trials ASHA stopped early count too)."""
    best = {}
    for result in grid:
        frame = result.metrics_dataframe
        if (
            result.config is None
            or frame is None
            or METRIC not in frame
            or "configs_json" not in result.metrics
        ):
            continue
        arch, score = result.config["arch"], float(frame[METRIC].max())
        if arch not in best or score > best[arch][METRIC]:
            model, train = reported_configs(result.metrics)
            best[arch] = {
                METRIC: score,
                "model": {k: v for k, v in dataclasses.asdict(model).items() if k != "arch"},
                "train": dataclasses.asdict(train),
            }
    if not best:
        raise UserError("the search finished no epoch of any trial; see the errors above")
    return best
