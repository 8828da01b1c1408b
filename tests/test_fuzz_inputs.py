"""Generated bad input for every input surface (hypothesis, seeded and bounded so the fast tier stays fast).

Every bad input must be refused by the CLI with exit status 2 and one paragraph naming the file, line,
key or option; never a traceback; nothing under the example's folder (an earlier output folder, the
--out / --storage paths) created or changed; and Ray never started (`no_ray`). Any text is a good review:
`predict` scores it, and flags it when it holds no token of the vocabulary.
`pytest -s tests/test_fuzz_inputs.py` prints how many inputs each surface was given.
"""

import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import logging
import math
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnn_models.cli import main
from rnn_models.config import ARCHS, MODEL_CHOICES, ModelConfig, PrepareConfig, RunConfig, TrainConfig
from rnn_models.data.prepared import FORMAT_VERSION
from rnn_models.data.text import normalise_reference
from rnn_models.presets import PREPARE_KEYS
from rnn_models.validation import key_path

TRIED = Counter()  # generated inputs per surface


def fuzz(examples: int):
    # derandomize: the same inputs on every run and machine; function-scoped fixtures (capsys, monkeypatch)
    # are fine here, every example reads capsys and gets its own folder.
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\ngenerated inputs per surface: " + ", ".join(f"{k} {n}" for k, n in sorted(TRIED.items())))


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """A bad input must be refused before Ray starts: getting that far fails the test, starts nothing."""

    def refuse(*args, **kwargs):
        raise AssertionError("a generated input got as far as starting Ray")

    for module in ("rnn_models.data.prepare", "rnn_models.tuning.session", "rnn_models.cluster"):
        monkeypatch.setattr(f"{module}.connect", refuse)
    root = (
        logging.getLogger()
    )  # main's INFO lines go nowhere: a handler bound to another test's stderr breaks
    monkeypatch.setattr(root, "handlers", [logging.NullHandler()])


@contextlib.contextmanager
def folder():
    """One example's folder, holding an earlier output that must survive untouched."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        root = Path(tmp)
        (root / "out").mkdir()
        (root / "out" / "keep.txt").write_text("an earlier output\n")
        yield root


def _tree(root: Path) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))
    }


def refused(capsys, root: Path, argv: list[str], *names: str) -> str:
    """Run the CLI on a bad input: exit 2, one paragraph naming every one of `names`, no traceback, and
    nothing under `root` created or changed. Returns the paragraph."""
    before = _tree(root)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code} for {argv}\n{err}"
    assert "Traceback" not in err and err.startswith("error: ") and "\n\n" not in err.strip(), err
    for name in names:
        assert name in err, f"{name!r} not named in: {err}"
    assert _tree(root) == before
    return err


def fits(value, kind) -> bool:
    """Whether a JSON value is one a field of type `kind` takes (an int is a number; a bool is not an int)."""
    if kind is bool or kind is str:
        return isinstance(value, kind)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) if kind is int else math.isfinite(value)


def field_types(cls, keys=None) -> dict:
    return {
        f.name: f.type
        for f in dataclasses.fields(cls)
        if (keys is None or f.name in keys) and f.name != "arch"
    }


SECTIONS = {
    "prepare": field_types(PrepareConfig, PREPARE_KEYS),
    "model": field_types(ModelConfig),
    "train": field_types(TrainConfig),
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=4,
)
NOT_OBJECT = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6) | st.lists(JSON, max_size=3)
)
NAME = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=8
)
NEGATIVE = st.integers(max_value=-1)
# A value out of each option's range (every int option is at least 0, every float one too).
OUT_OF_RANGE = {
    "vocab_size": st.integers(max_value=0),
    "max_len": st.integers(max_value=0),
    "val_size": st.integers(max_value=0),
    "strip_br": st.nothing(),
    "embedding_size": st.integers(max_value=0),
    "hidden_size": st.integers(max_value=0),
    "num_layers": st.integers(max_value=0),
    "dropout": st.floats(min_value=1, max_value=1e6) | st.floats(-1e6, -1e-6),
    "merge": NAME.filter(lambda s: s not in ("sum", "concat")),
    "seed_faithful": st.nothing(),
    "epochs": st.integers(max_value=0),
    "batch_size": st.integers(max_value=0),
    "lr": st.floats(-1e6, 0),
    "weight_decay": st.floats(-1e6, -1e-6),
    "lr_schedule": NAME.filter(lambda s: s not in ("constant", "cosine")),
    "grad_clip": st.floats(-1e6, -1e-6),
    "patience": NEGATIVE,
    "seed": NEGATIVE | st.integers(min_value=2**32),
    "shuffle_buffer": NEGATIVE,
    "bigram_buckets": NEGATIVE,
    "forget_bias": st.floats(-1e6, -1e-6),
    "warmup": st.floats(-1e6, -1e-6),
    "bucket_batches": NEGATIVE,
    "adversarial": st.floats(-1e6, -1e-6),
    "token_dropout": st.floats(min_value=1, max_value=1e6) | st.floats(-1e6, -1e-6),
    "test_checkpoint": NAME.filter(lambda s: s not in ("best", "last")),
    **{
        name: NAME.filter(lambda s, choices=choices: s not in choices)
        for name, choices in MODEL_CHOICES.items()
    },
}


def wrong_type(kind):
    return JSON.filter(lambda v: not fits(v, kind))


def refused_json(capsys, content, command: str, option: str, name: str, names) -> None:
    """`command OPTION <a file of content>` is refused, the message naming what `names(path)` lists."""
    with folder() as root:
        path = root / name
        json_file(path, content)
        refused(
            capsys,
            root,
            [command, option, str(path), "--data", str(root / "data"), "--storage", str(root / "runs")],
            *names(path),
        )


def json_file(path: Path, content) -> None:
    """`content` as JSON, or as raw bytes (not JSON, or not UTF-8)."""
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())


NOT_JSON = st.one_of(
    st.binary(min_size=1, max_size=20).filter(lambda b: not _parses(b)),
    st.just(b'{"train": {"lr": 0.1}'),
    st.just(b"\xff\xfe{}"),
)


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------- CSV sources

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=12)


def _csv(rows: list[list[str]]) -> tuple[bytes, list[int]]:
    """The CSV of `rows` (the first is the header) and the line each data row starts on (header = 1)."""
    text, starts, line = "", [], 1
    for i, row in enumerate(rows):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(row)
        if i:
            starts.append(line)
        text += buffer.getvalue()
        line += buffer.getvalue().count("\n")
    return text.encode(), starts


CSV_DEFECTS = [
    "label",
    "label type",
    "split",
    "ragged",
    "not utf-8",
    "header only",
    "empty file",
    "columns",
    "too few",
    "bytes",
]


@st.composite
def bad_csv(draw, defect):
    """(file bytes, the line to name or None): good rows, and one `defect`."""
    style = draw(st.sampled_from([("review", "sentiment"), ("text", "label")]))
    split = defect == "split" or draw(st.booleans())
    n = draw(st.integers(4, 7))
    labels = [["negative", "positive"][i % 2] if style[1] == "sentiment" else str(i % 2) for i in range(n)]
    rows = [[draw(TEXT), labels[i]] + ([["train", "test"][i // 2 % 2]] if split else []) for i in range(n)]
    header = list(style) + (["split"] if split else [])
    k, line = draw(st.integers(0, n - 1)), None
    if defect == "label":
        bad = (
            NAME.filter(lambda s: s.strip().lower() not in ("positive", "negative"))
            if style[1] == "sentiment"
            else (st.integers(2, 2**63 - 1) | st.integers(-(2**63), -1)).map(str) | st.just("")
        )
        rows[k][1], line = draw(bad), k
    elif defect == "label type":
        style = ("text", "label")
        header[:2], rows[k][1] = style, draw(st.sampled_from(["positive", "0.5", "yes", "1e3"]))
    elif defect == "split":
        rows[k][2], line = draw(NAME.filter(lambda s: s.strip().lower() not in ("train", "test"))), k
    elif defect == "ragged":
        rows[k].append(draw(TEXT))
    elif defect == "header only":
        rows = []
    elif defect == "columns":
        header = draw(
            st.lists(
                st.text("abcdefrvwstxl", min_size=1, max_size=9),
                min_size=len(header),
                max_size=len(header),
                unique=True,
            ).filter(lambda h: not ({"review", "sentiment"} <= set(h) or {"text", "label"} <= set(h)))
        )
    elif defect == "too few":  # one review, or every review in one split
        rows = rows[:1] if not split else [r[:2] + ["train"] for r in rows]
    data, starts = _csv([header] + rows)
    if defect == "not utf-8":
        data = data.replace(b"\n", b"\n\xff\xfe", 1) + b"caf\xe9,x\n"
    if defect == "empty file":
        data = b""
    if defect == "bytes":
        data = draw(st.binary(max_size=60))
    return data, (starts[line] if line is not None else None)


@pytest.mark.parametrize("defect", CSV_DEFECTS)
@fuzz(8)
@given(data=st.data())
def test_bad_csv_sources(defect, capsys, data):
    content, line = data.draw(bad_csv(defect))
    with folder() as root:
        source = root / "reviews.csv"
        source.write_bytes(content)
        message = refused(
            capsys, root, ["prepare", "--source", str(source), "--out", str(root / "out")], str(source)
        )
        if line is not None:
            assert f"{source}, line {line}:" in message
    TRIED["CSV source"] += 1


# ------------------------------------------------------------------------------------------ parquet sources


def _good_table(n: int = 4) -> pa.Table:
    return pa.table(
        {"text": [f"review {i}" for i in range(n)], "label": pa.array([i % 2 for i in range(n)], pa.int64())}
    )


PARQUET_DEFECTS = [
    "columns",
    "text type",
    "text null",
    "label type",
    "label value",
    "label null",
    "no rows",
    "one row",
    "corrupt",
]


@st.composite
def bad_parquet(draw, defect):
    """(table or bytes for one of the two files, which file, the row index to name or None)."""
    table, k, row = _good_table(), draw(st.integers(0, 3)), None
    text, label = table["text"].to_pylist(), table["label"].to_pylist()
    if defect == "columns":
        names = draw(
            st.lists(NAME, min_size=1, max_size=3, unique=True).filter(
                lambda n: not {"text", "label"} <= {*n}
            )
        )
        table = pa.table({name: label for name in names})
    elif defect == "text type":
        values = draw(
            st.sampled_from(
                [
                    pa.array(label),
                    pa.array([0.5] * 4),
                    pa.array([True] * 4),
                    pa.array([b"x"] * 4),
                    pa.array([["a"]] * 4),
                    pa.nulls(4),
                ]
            )
        )
        table = table.set_column(0, "text", values)
    elif defect == "text null":
        text[k], row = None, k
        table = table.set_column(0, "text", pa.array(text, pa.string()))
    elif defect == "label type":
        values = draw(
            st.sampled_from([pa.array(["0", "1"] * 2), pa.array([0.0, 1.0] * 2), pa.array([False, True] * 2)])
        )
        table = table.set_column(1, "label", values)
    elif defect in ("label value", "label null"):
        kind = draw(st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8()]))
        low = -128 if kind != pa.uint8() else 0
        label[k], row = (
            (
                draw(st.integers(low, 127).filter(lambda v: v not in (0, 1)))
                if defect == "label value"
                else None
            ),
            k,
        )
        table = table.set_column(1, "label", pa.array(label, kind))
    elif defect in ("no rows", "one row"):
        table = table.slice(0, 0 if defect == "no rows" else 1)
    if defect == "corrupt":
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        table = data[: draw(st.integers(0, len(data) - 1))]
    return table, draw(st.sampled_from(["train", "test"])), row


@pytest.mark.parametrize("defect", PARQUET_DEFECTS)
@fuzz(6)
@given(data=st.data())
def test_bad_parquet_sources(defect, capsys, data):
    bad, split, row = data.draw(bad_parquet(defect))
    with folder() as root:
        source = root / "imdb"
        (source / "plain_text").mkdir(parents=True)
        for name in ("train", "test"):
            path = source / "plain_text" / f"{name}-00000-of-00001.parquet"
            if name != split:
                pq.write_table(_good_table(), path)
            elif isinstance(bad, bytes):
                path.write_bytes(bad)
            else:
                pq.write_table(bad, path)
        message = refused(
            capsys, root, ["prepare", "--source", str(source), "--out", str(root / "out")], str(source)
        )
        if row is not None:
            assert f"{split}-00000-of-00001.parquet, row index {row}:" in message
    TRIED["parquet source"] += 1


# ------------------------------------------------------------------------------------------------- presets

PRESET_DEFECTS = ["type", "range", "unknown key", "unknown arch", "not an object", "top", "not json"]


@st.composite
def bad_preset(draw, defect):
    """(file content, the key path to name or None)."""
    preset = {"about": "generated", "train": {"epochs": 2}, "archs": {"lstm": {"model": {"hidden_size": 32}}}}
    section = draw(st.sampled_from(list(SECTIONS)))
    where = (
        [section]
        if section == "prepare" or draw(st.booleans())
        else ["archs", draw(st.sampled_from(ARCHS)), section]
    )
    target = preset
    for key in where:
        target = target.setdefault(key, {})
    if defect in ("type", "range"):
        ranged = [n for n in SECTIONS[section] if defect == "type" or SECTIONS[section][n] is not bool]
        name = draw(st.sampled_from(ranged))
        target[name] = draw(wrong_type(SECTIONS[section][name]) if defect == "type" else OUT_OF_RANGE[name])
        return preset, key_path(".".join(where), name)
    if defect == "unknown key":
        level = draw(st.sampled_from(["top", "section", "arch"]))
        allowed = {
            "top": {"name", "about", "prepare", "model", "train", "archs"},
            "section": set(SECTIONS[section]),
            "arch": {"model", "train"},
        }[level]
        key = draw(NAME.filter(lambda s: s not in allowed))
        inside = {"top": [], "section": where, "arch": ["archs", "lstm"]}[level]
        target = preset
        for k in inside:
            target = target.setdefault(k, {})
        target[key] = draw(JSON)
        return preset, key_path(".".join(inside), key)
    if defect == "unknown arch":
        arch = draw(NAME.filter(lambda s: s not in ARCHS))
        preset["archs"][arch] = {}
        return preset, key_path("archs", arch)
    if defect == "not an object":
        spot = draw(
            st.sampled_from(
                [["prepare"], ["model"], ["train"], ["archs"], ["archs", "lstm"], ["archs", "lstm", "model"]]
            )
        )
        target = preset
        for key in spot[:-1]:
            target = target[key]
        target[spot[-1]] = draw(NOT_OBJECT)
        return preset, ".".join(spot)
    if defect == "top":
        return draw(NOT_OBJECT), None
    return draw(NOT_JSON), None


@pytest.mark.parametrize("defect", PRESET_DEFECTS)
@fuzz(12)
@given(data=st.data())
def test_bad_preset_files(defect, capsys, data):
    content, key = data.draw(bad_preset(defect))
    refused_json(
        capsys,
        content,
        "train",
        "--preset",
        "preset.json",
        lambda path: [str(path)] + ([f"{key}:"] if key else []),
    )
    TRIED["preset file"] += 1


# -------------------------------------------------------------------------------------------- search spaces

OPTION_TYPES = {**SECTIONS["model"], **SECTIONS["train"]}
VALID = {
    "lr": st.floats(1e-5, 1.0),
    "weight_decay": st.floats(0, 1),
    "grad_clip": st.floats(0, 10),
    "dropout": st.floats(0, 0.9),
    "epochs": st.integers(1, 20),
    "batch_size": st.integers(1, 512),
    "patience": st.integers(0, 5),
    "seed": st.integers(0, 1000),
    "shuffle_buffer": st.integers(0, 5000),
    "embedding_size": st.integers(1, 256),
    "hidden_size": st.integers(1, 256),
    "num_layers": st.integers(1, 4),
    "merge": st.sampled_from(["sum", "concat"]),
    "lr_schedule": st.sampled_from(["constant", "cosine"]),
    "seed_faithful": st.booleans(),
    **{name: st.sampled_from(choices) for name, choices in MODEL_CHOICES.items()},
    "pooling": st.just("flatten"),
    "bigram_buckets": st.just(0),
    "forget_bias": st.floats(0, 2),
    "warmup": st.floats(0, 2),
    "bucket_batches": st.integers(0, 100),
    "test_checkpoint": st.sampled_from(["best", "last"]),
    "token_dropout": st.floats(0, 0.9),
    "adversarial": st.floats(0, 0.5),
}


SEARCH_DEFECTS = [
    "top",
    "unknown option",
    "distribution",
    "choice list",
    "choice value",
    "kind for type",
    "bounds arity",
    "bounds type",
    "bounds order",
    "bounds range",
    "not json",
]


@st.composite
def bad_search_space(draw, defect):
    """(file content, what must be named after the file, e.g. "lr.uniform[0]")."""
    numeric = [n for n, t in OPTION_TYPES.items() if t in (int, float)]
    name = draw(st.sampled_from(numeric if defect.startswith("bounds") else list(OPTION_TYPES)))
    kind_of = OPTION_TYPES[name]
    kinds = ["randint"] if kind_of is int else ["uniform", "loguniform"]
    kind = draw(st.sampled_from(kinds))
    space = {"hidden_size": {"choice": [32, 64]}}
    if defect == "top":
        return draw(NOT_OBJECT | st.just({})), None
    if defect == "not json":
        return draw(NOT_JSON), None
    if defect == "unknown option":
        option = draw(NAME.filter(lambda s: s not in OPTION_TYPES))
        return {**space, option: {"choice": [1]}}, key_path("", option)
    if defect == "distribution":
        kinds = ("choice", "uniform", "loguniform", "randint")
        space[name] = draw(
            JSON.filter(lambda v: not (isinstance(v, dict) and len(v) == 1 and next(iter(v)) in kinds))
        )
        return space, name
    if defect == "choice list":
        space[name] = {"choice": draw(JSON.filter(lambda v: not isinstance(v, list) or not v))}
        return space, f"{name}.choice"
    if defect == "choice value":
        values = draw(st.lists(VALID[name], min_size=1, max_size=3))
        i = draw(st.integers(0, len(values) - 1))
        values[i] = draw(wrong_type(kind_of) | OUT_OF_RANGE[name])
        space[name] = {"choice": values}
        return space, f"{name}.choice[{i}]"
    if defect == "kind for type":
        name = draw(st.sampled_from([n for n, t in OPTION_TYPES.items() if t is not float]))
        kind = draw(
            st.sampled_from(
                ["uniform", "loguniform"] + (["randint"] if OPTION_TYPES[name] is not int else [])
            )
        )
        space[name] = {kind: [1, 2]}
        return space, f"{name}.{kind}"
    if defect == "bounds arity":
        space[name] = {kind: draw(JSON.filter(lambda v: not isinstance(v, list) or len(v) != 2))}
        return space, f"{name}.{kind}"
    low, high = draw(VALID[name]), None
    if defect == "bounds type":
        i = draw(st.integers(0, 1))
        bounds = [low, low + 1]
        bounds[i] = draw(wrong_type(kind_of))
        space[name] = {kind: bounds}
        return space, f"{name}.{kind}[{i}]"
    if defect == "bounds order":
        high = low - draw(st.integers(0, 3)) if kind_of is int else low * draw(st.floats(0.1, 1))
        space[name] = {kind: [low, high]}
        return space, f"{name}.{kind}"
    low = draw(OUT_OF_RANGE[name])  # bounds range
    space[name] = {kind: [low, low + 1]}
    return space, f"{name}.{kind}[0]"


@pytest.mark.parametrize("defect", SEARCH_DEFECTS)
@fuzz(8)
@given(data=st.data())
def test_bad_search_spaces(defect, capsys, data):
    content, key = data.draw(bad_search_space(defect))
    refused_json(
        capsys,
        content,
        "tune",
        "--search-space",
        "space.json",
        lambda path: [f"--search-space {path}"] + ([key] if key else []),
    )
    TRIED["search-space file"] += 1


# ---------------------------------------------------------------------------------------- command-line options

CLI_OPTIONS = {
    **field_types(TrainConfig),
    **field_types(ModelConfig),
    **field_types(
        RunConfig,
        ("archs", "workers_per_trial", "use_gpu", "name", "max_failures", "torch_threads", "gpu_wait"),
    ),
    **field_types(PrepareConfig, ("vocab_size", "max_len", "strip_br", "val_size", "max_reviews_per_split")),
}
CHOICES = {
    "use_gpu": ("auto", "yes", "no"),
    "merge": ("sum", "concat"),
    "lr_schedule": ("constant", "cosine"),
    "test_checkpoint": ("best", "last"),
    **MODEL_CHOICES,
}
ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10)


def _parses_as(kind, text: str) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


@st.composite
def bad_option(draw):
    """(option, value): a value no option of that name accepts."""
    name = draw(st.sampled_from(sorted(CLI_OPTIONS)))
    kind = CLI_OPTIONS[name]
    if kind == int | None:
        kind = int
    if kind is bool:
        value = draw(ARG)  # --strip-br takes no value
    elif kind in (int, float):
        floats = st.floats(max_value=-1e-9, allow_infinity=False).map(repr) | st.sampled_from(
            ["nan", "inf", "-inf"]
        )
        value = draw(
            ARG.filter(lambda s: not _parses_as(kind, s))
            | NEGATIVE.map(str)
            | (floats if kind is float else st.nothing())
        )
    elif name in CHOICES:
        value = draw(ARG.filter(lambda s: s not in CHOICES[name]))
    elif name == "archs":
        value = ",".join(draw(st.lists(st.sampled_from(ARCHS) | ARG, max_size=4)))
        names = [a.strip() for a in value.split(",") if a.strip()]
        if names and set(names) <= set(ARCHS) and len(set(names)) == len(names):
            value += "," + names[0]  # known names only: repeat one
    else:  # name: a folder under --storage
        value = draw(st.sampled_from([".", ".."]) | st.tuples(ARG, ARG).map("/".join))
    return name, value


@fuzz(100)
@given(bad_option())
def test_bad_command_line_values(capsys, case):
    name, value = case
    option = "--" + name.replace("_", "-")
    with folder() as root:
        refused(
            capsys,
            root,
            ["train", "--data", str(root / "data"), "--storage", str(root / "runs"), f"{option}={value}"],
            option,
        )
    TRIED["command-line option"] += 1


# ------------------------------------------------------------------------------------------------- predict

VOCAB = ["great", "awful", "movie", "plot"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained tiny LSTM's checkpoint: predict only needs it to load and score."""
    from rnn_models.models import model_from_config
    from rnn_models.training.checkpoint import checkpoint_meta, save_checkpoint

    model_cfg = ModelConfig(arch="lstm", hidden_size=4, embedding_size=4)
    model = model_from_config(model_cfg, len(VOCAB), 8, seed=0)
    data = {
        "vocab_size": len(VOCAB),
        "max_len": 8,
        "vocab_sha256": "x",
        "fingerprint": "y",
        "strip_br": False,
    }
    path = tmp_path_factory.mktemp("fuzz") / "checkpoint"
    path.mkdir()
    save_checkpoint(
        path,
        model=model,
        optimizer=torch.optim.Adam(model.parameters()),
        scheduler=None,
        meta=checkpoint_meta(1, model_cfg, TrainConfig(), data, []),
        vocab=VOCAB,
    )
    return path


# Control characters left out: Python's str.split and pyarrow's splitter disagree on \x1c-\x1f.
REVIEW = st.lists(
    st.sampled_from(VOCAB) | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8), max_size=4
).map(" ".join)


@fuzz(40)
@given(st.lists(REVIEW, min_size=1, max_size=4))
def test_any_review_text_is_scored(checkpoint, capsys, texts):
    assert main(["predict", "--checkpoint", str(checkpoint), "--", *texts]) == 0
    out, err = capsys.readouterr()
    scores = [float(line.split("\t")[0]) for line in out.splitlines()]
    assert len(scores) == len(texts) and all(0 <= s <= 1 for s in scores)
    unknown = [i + 1 for i, t in enumerate(texts) if not set(normalise_reference(t)) & set(VOCAB)]
    assert ("no token of the checkpoint's vocabulary" in err) == bool(unknown) and "Traceback" not in err
    if unknown:
        assert (
            f"warning: {len(unknown)} review(s)" in err
            and f"(review {', '.join(map(str, unknown[:10]))}" in err
        )
    TRIED["predict text"] += 1


REVIEW_FILE_DEFECTS = [
    "missing",
    "blank txt",
    "csv columns",
    "csv header only",
    "parquet column",
    "parquet type",
    "parquet corrupt",
    "csv bytes",
]


@st.composite
def bad_review_file(draw, defect):
    """(file name or None for a missing file, content)."""
    if defect == "missing":
        return None, b""
    if defect == "blank txt":
        return "reviews.txt", "".join(
            draw(st.lists(st.sampled_from([" ", "\t", "\n", "\r\n"]), max_size=6))
        ).encode()
    if defect in ("csv columns", "csv header only"):
        names = (
            ["review"]
            if defect == "csv header only"
            else draw(
                st.lists(st.text("abcdefgh", min_size=1, max_size=5), min_size=1, max_size=3, unique=True)
            )
        )
        rows = [] if defect == "csv header only" else [["x"] * len(names)]
        return "reviews.csv", _csv([names] + rows)[0]
    if defect == "csv bytes":
        return "reviews.csv", draw(
            st.binary(max_size=40).filter(lambda b: b"review" not in b and b"text" not in b)
        )
    sink = pa.BufferOutputStream()
    column = (
        "review" if defect != "parquet column" else draw(NAME.filter(lambda s: s not in ("review", "text")))
    )
    values = (
        draw(st.sampled_from([pa.array([1, 2]), pa.array([0.5, 1.5]), pa.array([b"a", b"b"])]))
        if defect != "parquet column"
        else pa.array(["a", "b"])
    )
    pq.write_table(pa.table({column: values}), sink)
    data = sink.getvalue().to_pybytes()
    if defect == "parquet corrupt":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return "reviews.parquet", data


@pytest.mark.parametrize("defect", REVIEW_FILE_DEFECTS)
@fuzz(6)
@given(data=st.data())
def test_bad_review_files(defect, checkpoint, capsys, data):
    name, content = data.draw(bad_review_file(defect))
    with folder() as root:
        path = root / (name or "nowhere.txt")
        if name:
            path.write_bytes(content)
        refused(
            capsys, root, ["predict", "--checkpoint", str(checkpoint), "--file", str(path)], f"--file {path}"
        )
    TRIED["predict file"] += 1


@fuzz(30)
@given(st.binary(max_size=300))
def test_any_text_file_is_read_line_by_line(checkpoint, capsys, data):
    with folder() as root:
        path = root / "reviews.txt"
        path.write_bytes(data)
        lines = [
            line
            for line in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace")
            if line.strip()
        ]
        code = main(["predict", "--checkpoint", str(checkpoint), "--file", str(path)])
        out, err = capsys.readouterr()
        assert "Traceback" not in err and code == (0 if lines else 2)
        assert len(out.splitlines()) == len(lines)
    TRIED["predict text file"] += 1


# ---------------------------------------------------------------------------------------- checkpoint meta.json

META_DEFECTS = ["type", "range", "unknown key", "missing", "data", "top", "not json", "weights", "vocab size"]


@st.composite
def bad_meta(draw, defect, meta: dict):
    """(meta.json content, what must be named)."""
    meta = json.loads(json.dumps(meta))
    section = draw(st.sampled_from(["model", "train"]))
    types = {**field_types(ModelConfig), "arch": str} if section == "model" else field_types(TrainConfig)
    if defect == "type":
        name = draw(st.sampled_from(sorted(types)))
        meta[section][name] = draw(wrong_type(types[name]))
        return meta, f"{section}.{name}"
    if defect == "range":
        name = draw(st.sampled_from([n for n in sorted(types) if n in OUT_OF_RANGE and types[n] is not bool]))
        meta[section][name] = draw(OUT_OF_RANGE[name])
        return meta, f"{section}.{name}"
    if defect == "unknown key":
        key = draw(NAME.filter(lambda s: s not in types))
        meta[section][key] = 1
        return meta, key_path(section, key)
    if defect == "missing":
        key = draw(st.sampled_from(["epoch", "model", "train", "data", "history"]))
        del meta[key]
        return meta, key
    if defect == "data":
        key = draw(st.sampled_from(["vocab_size", "max_len", "vocab_sha256", "strip_br"]))
        meta["data"][key] = draw(
            wrong_type({"vocab_sha256": str, "strip_br": bool}.get(key, int))
            | (st.integers(max_value=0) if key in ("vocab_size", "max_len") else st.nothing())
        )
        return meta, f"data.{key}"
    if defect == "top":
        return draw(NOT_OBJECT), "meta.json"
    if defect == "not json":
        return draw(NOT_JSON), "meta.json"
    if defect == "weights":  # a valid meta.json that describes another model than model.pt holds
        meta["model"]["hidden_size"] = draw(st.integers(5, 64))
        return meta, "model.pt does not match"
    meta["data"]["vocab_size"] = draw(st.integers(1, len(VOCAB) - 1))  # fewer than vocab.json holds
    return meta, "data.vocab_size"


@pytest.mark.parametrize("defect", META_DEFECTS)
@fuzz(6)
@given(st.data())
def test_bad_checkpoint_meta(defect, checkpoint, capsys, data):
    content, name = data.draw(bad_meta(defect, json.loads((checkpoint / "meta.json").read_text())))
    with folder() as root:
        copy = root / "checkpoint"
        shutil.copytree(checkpoint, copy)
        json_file(copy / "meta.json", content)
        refused(
            capsys,
            root,
            ["predict", "--checkpoint", str(copy), "a great movie"],
            f"--checkpoint {copy}",
            name,
        )
    TRIED["checkpoint meta.json"] += 1


# ------------------------------------------------------------------------------------------ manifest.json

GOOD = object()


def _prepared(root: Path, manifest=GOOD) -> dict:
    """A prepared folder with no shards (open_prepared accepts it); `manifest` replaces its manifest."""
    root.mkdir()
    (root / "vocab.json").write_text(json.dumps(VOCAB))
    good = {
        "format": FORMAT_VERSION,
        "fingerprint": "f" * 64,
        "options": {"max_len": 8, "strip_br": False},
        "vocab": {
            "size": len(VOCAB),
            "sha256": hashlib.sha256((root / "vocab.json").read_bytes()).hexdigest(),
        },
        "splits": {s: {"reviews": 0, "files": {}} for s in ("train", "val", "test")},
    }
    json_file(root / "manifest.json", good if manifest is GOOD else manifest)
    return good


def test_the_hand_made_prepared_folder_is_accepted(tmp_path):
    from rnn_models.data.prepared import open_prepared

    _prepared(tmp_path / "data")
    assert open_prepared(str(tmp_path / "data")).vocab == VOCAB


MANIFEST_KEYS = {
    ("format",): int,
    ("fingerprint",): str,
    ("options",): dict,
    ("options", "max_len"): int,
    ("vocab",): dict,
    ("vocab", "size"): int,
    ("vocab", "sha256"): str,
    ("splits",): dict,
    ("splits", "val"): dict,
    ("splits", "train", "reviews"): int,
    ("splits", "test", "files"): dict,
    ("splits", "train", "files", "train/train-00000.parquet", "sha256"): str,
}


MANIFEST_DEFECTS = ["type", "missing", "top", "not json"]


@st.composite
def bad_manifest(draw, defect):
    """(manifest content, the key path to name or None)."""
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _prepared(Path(tmp) / "data")
    if defect == "top":
        return draw(NOT_OBJECT), None
    if defect == "not json":
        return draw(NOT_JSON), None
    keys = draw(st.sampled_from(sorted(MANIFEST_KEYS)))
    target = manifest
    for key in keys[:-1]:
        target = target.setdefault(key, {})
    if defect == "type":
        kind = MANIFEST_KEYS[keys]
        target[keys[-1]] = draw(
            JSON.filter(lambda v: not (isinstance(v, dict) if kind is dict else fits(v, kind)))
        )
    else:
        target.pop(keys[-1], None)
    return manifest, key_path("", *keys)


@pytest.mark.parametrize("defect", MANIFEST_DEFECTS)
@fuzz(12)
@given(data=st.data())
def test_bad_manifests(defect, capsys, data):
    content, key = data.draw(bad_manifest(defect))
    with folder() as root:
        _prepared(root / "data", content)
        names = [str(root / "data" / "manifest.json")] + ([key] if key else [])
        refused(
            capsys, root, ["train", "--data", str(root / "data"), "--storage", str(root / "runs")], *names
        )
    TRIED["manifest.json"] += 1
