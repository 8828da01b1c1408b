"""Typed validation of JSON against the config dataclasses: strict types, unknown keys, ranges, key paths."""

import json

import pytest

from rnn_models.config import ModelConfig, PrepareConfig, TrainConfig
from rnn_models.errors import UserError
from rnn_models.validation import Manifest, document, key_path, typed, typed_value


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(UserError) as e:
        call(*args, **kwargs)
    return str(e.value)


def test_values_become_the_dataclass():
    assert typed(TrainConfig, {"lr": 0.01, "epochs": 3}, "f.json", "train") == TrainConfig(lr=0.01, epochs=3)
    assert typed(TrainConfig, {"lr": 1}, "f.json").lr == 1.0  # an integer is a number


@pytest.mark.parametrize(
    "values, message",
    [
        ({"lr": "fast"}, 'f.json: train.lr: expected a number, got "fast"'),
        ({"lr": float("nan")}, "f.json: train.lr: expected a finite number, got nan"),
        ({"epochs": True}, "f.json: train.epochs: expected an integer, got true"),
        ({"epochs": "3"}, 'f.json: train.epochs: expected an integer, got "3"'),
        ({"epochs": 2.0}, "f.json: train.epochs: expected an integer, got 2.0"),
        ({"lr_schedule": 1}, "f.json: train.lr_schedule: expected a string, got 1"),
        ({"lr": -1}, "f.json: train.lr: must be positive (got -1.0)"),  # the dataclass's own range check
        ({"seed": 2**32}, "f.json: train.seed: must be in [0, 4294967295] (got 4294967296)"),
        (
            {"learning_rate": 1},
            "f.json: train.learning_rate: unknown key (allowed in train: epochs, batch_size, lr,",
        ),
        ([1], "f.json: train: expected an object, got [1]"),
    ],
)
def test_each_problem_is_named_by_its_key_path(values, message):
    assert _error(typed, TrainConfig, values, "f.json", "train").startswith(message)


def test_several_problems_in_one_paragraph():
    message = _error(typed, TrainConfig, {"lr": "x", "epochs": None}, "f.json")
    assert message == 'f.json: epochs: expected an integer, got null; lr: expected a number, got "x"'


def test_only_the_given_keys_are_allowed():
    assert "model.arch: unknown key (allowed in model: dropout)" in _error(
        typed, ModelConfig, {"arch": "mlp"}, "f.json", "model", keys=("dropout",)
    )
    assert typed(PrepareConfig, {"max_len": 1}, "f.json", keys=("max_len",)).max_len == 1


def test_one_value():
    assert typed_value(ModelConfig, "hidden_size", 32, "s.json: hidden_size.choice[0]") == 32
    assert (
        _error(typed_value, ModelConfig, "dropout", 1.5, "s.json: dropout.choice[1]")
        == "s.json: dropout.choice[1]: must be in [0, 1) (got 1.5)"
    )
    assert typed_value(ModelConfig, "dropout", 1.5, "s.json", ranged=False) == 1.5


def test_documents_allow_more_keys_but_check_those_read():
    manifest = {
        "format": 1,
        "fingerprint": "f",
        "options": {"max_len": 8},
        "vocab": {"size": 2, "sha256": "s"},
        "splits": {s: {"reviews": 0, "files": {}} for s in ("train", "val", "test")},
        "created": "now",
    }
    assert document(Manifest, manifest, "m.json") == manifest
    manifest["splits"]["val"]["files"] = {"val/a.parquet": {"rows": 1}}
    assert (
        _error(document, Manifest, manifest, "m.json", "; prepare again")
        == 'm.json: splits.val.files."val/a.parquet".sha256: missing; prepare again'
    )


def test_odd_keys_are_quoted():
    assert key_path("", "a") == "a" and key_path("archs.lstm", "model") == "archs.lstm.model"
    assert key_path("lr", "choice", 0) == "lr.choice[0]"
    assert key_path("", "a\nb") == '"a\\nb"' and key_path("x", "") == 'x.""'


def test_what_prepare_and_training_write_passes(tmp_path):
    """The schemas against the real writers (no Ray started): a manifest as `prepare` builds it, and a
    checkpoint's meta.json with the data info training stores."""
    import pyarrow as pa

    import corpus
    from rnn_models.data import prepare as P
    from rnn_models.data.sources import open_source, scan
    from rnn_models.data.splits import split_reviews
    from rnn_models.data.text import normalise
    from rnn_models.training.checkpoint import _check_meta, checkpoint_meta
    from rnn_models.validation import CheckpointMeta

    cfg = PrepareConfig(
        source=str(corpus.write_csv(tmp_path / "r.csv")), out=str(tmp_path / "out"), val_size=1
    )
    source = open_source(cfg.source)
    scanned = scan(source)
    splits = split_reviews(scanned.sample, cfg)  # the sample holds every review of a source this small
    summaries = pa.concat_tables([P._summarise(normalise(splits[s]["text"]), s) for s in splits])
    vocab = P.count_vocabulary(summaries, 8)
    stats = {
        s: {
            **P._label_stats(splits[s]["label"].to_numpy()),
            **P._token_stats(summaries, vocab, s, 4),
            "files": {f"{s}/{s}-00000.parquet": {"rows": 1, "bytes": 100, "sha256": "x"}},
        }
        for s in splits
    }
    manifest = P._manifest(
        source, scanned, cfg, P._fingerprint(source, cfg), stats, json.dumps(vocab.to_pylist()).encode(), 0.1
    )
    assert document(Manifest, manifest, "manifest.json") == manifest
    info = {
        "vocab_size": len(vocab),
        "max_len": 4,
        "vocab_sha256": "x",
        "fingerprint": "y",
        "strip_br": False,
    }
    meta = checkpoint_meta(1, ModelConfig(), TrainConfig(), info, [{"epoch": 1, "val_accuracy": 0.5}])
    assert document(CheckpointMeta, meta, "meta.json") == meta
    _check_meta(meta, vocab.to_pylist(), "meta.json")
