"""A search space: option names (fields of ModelConfig or TrainConfig) mapped to a distribution, checked
against the option's type and range before any trial starts, and handed to Ray Tune.

    {"lr": {"loguniform": [1e-4, 1e-2]}, "hidden_size": {"choice": [32, 64, 128]},
     "dropout": {"uniform": [0.0, 0.5]}, "embedding_size": {"choice": [32, 64, 128]}}
"""

import dataclasses
import json
import math
from pathlib import Path

from ray import tune

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.errors import UserError
from rnn_models.presets import MODEL_KEYS, TRAIN_KEYS
from rnn_models.validation import key_path, typed_value

DISTRIBUTIONS = {
    "loguniform": tune.loguniform,
    "uniform": tune.uniform,
    "choice": tune.choice,
    "randint": tune.randint,
}
BUILTIN_SPACE = {
    "lr": {"loguniform": [1e-4, 1e-2]},
    "hidden_size": {"choice": [32, 64, 128]},
    "dropout": {"uniform": [0.0, 0.5]},
    "embedding_size": {"choice": [32, 64, 128]},
}


def load_search_space(spec: str) -> dict:
    """'builtin' or a JSON file; each key must be a model or training option with a known distribution whose
    arguments have the option's type and range."""
    if spec == "builtin":
        return BUILTIN_SPACE
    where = f"--search-space {spec}"
    try:
        space = json.loads(Path(spec).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: not a readable JSON file ({e})") from e
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where}: expected a JSON object of options, e.g. {json.dumps(BUILTIN_SPACE)}")
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


def largest_value(space: dict, name: str, otherwise: int) -> int:
    """The largest value of integer option `name` the space can draw (`otherwise` if it does not search it)."""
    if name not in space:
        return otherwise
    ((kind, args),) = space[name].items()
    return max(args) if kind == "choice" else args[1] - 1  # randint: the high end is exclusive


def tune_space(space: dict) -> dict:
    """{option: Tune distribution}."""
    return {
        name: DISTRIBUTIONS[kind](args) if kind == "choice" else DISTRIBUTIONS[kind](*args)
        for name, distribution in space.items()
        for kind, args in distribution.items()
    }
