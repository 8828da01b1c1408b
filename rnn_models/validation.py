"""Typed validation of what is read from JSON: presets, search spaces, checkpoint and manifest files.

The config dataclasses stay the one source of truth: `typed` checks a dict against a dataclass's field
types (pydantic, strict: "fast" is not a number, `true` not an integer, an int is a float), refuses unknown
keys, then builds the dataclass, whose `__post_init__` checks the ranges. Every failure is a `UserError`
naming the file and the key path: `preset.json: train.lr: expected a number, got "fast"`.
"""

import dataclasses
import functools
import json

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict

from rnn_models.config import OptionError
from rnn_models.errors import UserError

STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")  # what a person writes: every key known
DOCUMENT = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")  # what this tool writes
EXPECTED = {  # pydantic error type -> what was expected, in the words of a JSON file
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "string_type": "a string",
    "dict_type": "an object",
    "list_type": "a list",
    "finite_number": "a finite number",
}


def typed(cls, values, where: str, path: str = "", keys: tuple[str, ...] | None = None):
    """An instance of dataclass `cls` from `values` (a JSON object), only `keys` of its fields allowed
    (default: all); errors name `where` (the file) and the key path, below `path` (e.g. "train")."""
    try:
        checked = _adapter(cls, keys).validate_python(values)
    except ValidationError as e:
        allowed = ""
        if any(x["type"] == "extra_forbidden" for x in e.errors()):
            allowed = f" (allowed{' in ' + path if path else ''}: {', '.join(_adapter_keys(cls, keys))})"
        raise UserError(f"{where}: {describe(e, path)}{allowed}") from None
    try:
        return cls(**checked)
    except OptionError as e:  # a range check; named by its key path here, not by its command-line option
        raise UserError(f"{where}: {key_path(path, e.key)}: {e.problem}") from None


def typed_value(cls, key: str, value, where: str, ranged: bool = True):
    """One value of field `key` of dataclass `cls`, its type (and if `ranged`, its range) checked; `where`
    names it in errors."""
    try:
        checked = _value_adapter(cls, key).validate_python(value)
        if ranged:
            cls(**{key: checked})
    except ValidationError as e:
        raise UserError(f"{where}: {describe(e)}") from None
    except OptionError as e:
        raise UserError(f"{where}: {e.problem}") from None
    return checked


def document(shape, values, where: str, hint: str = ""):
    """`values` checked against `shape` (a TypedDict made `with_config(DOCUMENT)`); errors name `where`."""
    try:
        return _document_adapter(shape).validate_python(values)
    except ValidationError as e:
        raise UserError(f"{where}: {describe(e)}{hint}") from None


def describe(error: ValidationError, path: str = "") -> str:
    """`a.b: expected a number, got "fast"` for each error (the first five), joined by "; " (one paragraph)."""
    parts = []
    for e in error.errors(include_url=False)[:5]:
        key = key_path(path, *e["loc"])
        parts.append(f"{key}: {_problem(e)}" if key else _problem(e))
    return "; ".join(parts)


def _problem(e: dict) -> str:
    if e["type"] == "extra_forbidden":
        return "unknown key"
    if e["type"] == "missing":
        return "missing"
    expected = (
        f"expected {EXPECTED[e['type']]}" if e["type"] in EXPECTED else e["msg"][0].lower() + e["msg"][1:]
    )
    return f"{expected}, got {_shown(e['input'])}"


def key_path(path: str, *keys) -> str:
    """`path` (already a key path, e.g. "archs.lstm") extended by `keys`: "archs.lstm.model", "lr.choice[0]";
    list indexes as [i], keys that are empty, contain a dot or are not printable as JSON strings."""
    for k in keys:
        if isinstance(k, int):
            path += f"[{k}]"
        else:
            shown = k if k and k.isprintable() and "." not in k else json.dumps(k, ensure_ascii=False)
            path += f".{shown}" if path else shown
    return path


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False) if _is_json(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_json(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


@functools.cache
def _adapter(cls, keys: tuple[str, ...] | None) -> TypeAdapter:
    """A TypedDict of the dataclass's fields (all optional: the dataclass has the defaults), strict."""
    types = {
        f.name: NotRequired[f.type] for f in dataclasses.fields(cls) if f.name in _adapter_keys(cls, keys)
    }
    return TypeAdapter(with_config(STRICT)(TypedDict(cls.__name__, types)))


def _adapter_keys(cls, keys: tuple[str, ...] | None) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if keys is None or f.name in keys]


@functools.cache
def _document_adapter(shape) -> TypeAdapter:
    return TypeAdapter(shape)


@functools.cache
def _value_adapter(cls, key: str) -> TypeAdapter:
    return TypeAdapter(next(f.type for f in dataclasses.fields(cls) if f.name == key), config=STRICT)


# What the readers of the files this tool writes use of them (more keys are allowed: the files may grow).


@with_config(DOCUMENT)
class SplitFiles(TypedDict):
    rows: (
        int  # the shards hold their split in order: a review's place is its shard's first place plus its row
    )
    sha256: str
    bytes: NotRequired[int]  # written since the shards are written by Ray tasks; older manifests lack it


@with_config(DOCUMENT)
class ManifestSplit(TypedDict):
    reviews: int
    files: dict[str, SplitFiles]


@with_config(DOCUMENT)
class ManifestOptions(TypedDict):
    max_len: int
    strip_br: NotRequired[bool]


@with_config(DOCUMENT)
class ManifestVocab(TypedDict):
    size: int
    sha256: str


@with_config(DOCUMENT)
class ManifestSplits(TypedDict):
    train: ManifestSplit
    val: ManifestSplit
    test: ManifestSplit


@with_config(DOCUMENT)
class Manifest(TypedDict):
    """What `open_prepared` and the readers of prepared data read of `manifest.json`."""

    format: int
    fingerprint: str
    options: ManifestOptions
    vocab: ManifestVocab
    splits: ManifestSplits


@with_config(DOCUMENT)
class CheckpointData(TypedDict):
    """What evaluate and predict read of a checkpoint's `meta.json` data (the prepared data it was trained on)."""

    vocab_size: int
    max_len: int
    vocab_sha256: str
    strip_br: NotRequired[bool]


@with_config(DOCUMENT)
class CheckpointMeta(TypedDict):
    """A checkpoint's `meta.json`; `model` and `train` are then checked against their dataclasses."""

    epoch: int
    model: dict
    train: dict
    data: CheckpointData
    history: list
    test: NotRequired[dict]  # the tested checkpoint's scores on the test split
