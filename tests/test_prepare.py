"""`prepare` end to end on a real local Ray: exact ids, identical shards from every format, safe rewrites."""

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import corpus
from rnn_models.cli import main
from rnn_models.config import PrepareConfig
from rnn_models.data import prepare as prepare_module
from rnn_models.data.prepare import prepare
from rnn_models.data.prepared import open_prepared
from rnn_models.data.sources import load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import normalise_reference
from rnn_models.errors import UserError

SMALL = dict(vocab_size=8, max_len=6, val_size=2, num_shards=2)


def _shards(root, split) -> pa.Table:
    return pq.read_table(Path(root) / split).combine_chunks()


def _snapshot(root) -> dict:
    return {
        **{s: _shards(root, s).to_pydict() for s in ("train", "val", "test")},
        "vocab": json.loads((Path(root) / "vocab.json").read_text()),
    }


def test_shard_schema_manifest_and_file_list(ray_session, tmp_path):
    source = corpus.write_hf_parquet(tmp_path / "hf")
    data = prepare(PrepareConfig(source=str(source), out=str(tmp_path / "out"), **SMALL))
    table = _shards(data.root, "train")
    assert table.schema == pa.schema(
        [("ids", pa.list_(pa.int32(), 6)), ("length", pa.int32()), ("label", pa.int8())]
    )
    assert len(data.files("train")) == 2
    splits = data.manifest["splits"]
    assert {s: splits[s]["reviews"] for s in splits} == {"train": 6, "val": 2, "test": 4}
    assert splits["val"]["positive"] == 1 and splits["val"]["negative"] == 1
    assert splits["train"]["empty_reviews"] + splits["val"]["empty_reviews"] == 1
    assert data.manifest["options"]["vocab_size"] == 8 and "ray" in data.manifest["versions"]
    assert sum(f["rows"] for f in splits["train"]["files"].values()) == 6
    test = _shards(data.root, "test")
    assert test.schema == pa.schema([*table.schema, ("review", pa.int64())])


def _check_against_reference(cfg: PrepareConfig, data) -> None:
    """`data` holds, split by split, the rows a pure-Python tokeniser gives on the one-table split: the same
    vocabulary, ids, lengths, labels and order."""
    splits = split_reviews(load_reviews(cfg.source).table, cfg)  # the same seeded split, recomputed
    counts = Counter(t for text in splits["train"]["text"].to_pylist() for t in normalise_reference(text))
    vocab = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: cfg.vocab_size]
    assert data.vocab == vocab
    ids = {t: i + 2 for i, t in enumerate(vocab)}
    for split, table in splits.items():
        tokens = [[ids.get(t, 1) for t in normalise_reference(text)] for text in table["text"].to_pylist()]
        shards = _shards(data.root, split)
        assert shards["ids"].to_pylist() == [(row + [0] * cfg.max_len)[: cfg.max_len] for row in tokens], (
            split
        )
        assert shards["length"].to_pylist() == [min(len(row), cfg.max_len) for row in tokens]
        assert shards["label"].to_pylist() == table["label"].to_pylist()
        if split == "test":  # each review's key: its position in the canonical order
            assert shards["review"].to_pylist() == table["review"].to_pylist()


def test_vocabulary_and_ids_match_a_pure_python_reference(ray_session, tmp_path):
    source = corpus.write_hf_parquet(tmp_path / "hf")
    cfg = PrepareConfig(source=str(source), out=str(tmp_path / "out"), **SMALL)
    _check_against_reference(cfg, prepare(cfg))


def test_many_ranges_give_the_rows_of_one_table(ray_session, tmp_path, monkeypatch, caplog):
    """Sorted in ranges of a few reviews each, with duplicate reviews at the cuts and a source without splits,
    prepare still gives exactly the one-table rows."""
    reviews = corpus.REVIEWS * 3 + [(text.upper(), label, split) for text, label, split in corpus.REVIEWS]
    monkeypatch.setattr(prepare_module, "RANGE_BYTES", 60)  # bytes of text per range: most reviews alone
    caplog.set_level("INFO")
    no_split = tmp_path / "no-split.csv"  # the test split drawn by prepare
    with open(no_split, "w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *((text, label) for text, label, _ in reviews)])
    for source in (corpus.write_hf_parquet(tmp_path / "hf", reviews), no_split):
        cfg = PrepareConfig(source=str(source), out=str(tmp_path / f"out-{source.name}"), **SMALL)
        _check_against_reference(cfg, prepare(cfg))
        ranges = [int(r.split(" into ")[1].split()[0]) for r in caplog.messages if " range(s) of " in r]
        assert ranges[-1] >= 10, ranges


def test_every_source_format_gives_identical_shards(ray_session, tmp_path):
    sources = [
        corpus.write_hf_parquet(tmp_path / "hf"),
        corpus.write_aclimdb_dir(tmp_path / "acl"),
        corpus.write_tarball(tmp_path / "aclImdb_v1.tar.gz"),
        corpus.write_csv(tmp_path / "r.csv"),
        corpus.write_csv(tmp_path / "t.csv", style="text,label"),
    ]
    snapshots = [
        _snapshot(prepare(PrepareConfig(source=str(s), out=str(tmp_path / f"out{i}"), **SMALL)).root)
        for i, s in enumerate(sources)
    ]
    assert all(s == snapshots[0] for s in snapshots[1:])


def test_rerun_reuses_unless_forced_or_options_change(ray_session, tmp_path, caplog):
    source = corpus.write_hf_parquet(tmp_path / "hf")
    cfg = PrepareConfig(source=str(source), out=str(tmp_path / "out"), **SMALL)
    first = prepare(cfg).fingerprint
    caplog.set_level("INFO")
    assert prepare(cfg).fingerprint == first and "reusing it" in caplog.text
    caplog.clear()
    prepare(cfg, force=True)
    assert "reusing" not in caplog.text
    changed = prepare(PrepareConfig(**{**cfg.__dict__, "max_len": 4}))
    assert changed.fingerprint != first and changed.max_len == 4


def test_a_failed_prepare_leaves_the_previous_output_intact(ray_session, tmp_path, monkeypatch):
    source = corpus.write_hf_parquet(tmp_path / "hf")
    cfg = PrepareConfig(source=str(source), out=str(tmp_path / "out"), **SMALL)
    before = _snapshot(prepare(cfg).root)
    real = prepare_module._write_shards

    def write_then_fail(*args):
        real(*args)
        raise KeyboardInterrupt  # as if interrupted right after the shards were written

    monkeypatch.setattr(prepare_module, "_write_shards", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, force=True)
    assert _snapshot(open_prepared(cfg.out).root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "out"]  # no temporary left behind


def test_a_tampered_directory_is_refused_and_rebuilt(ray_session, tmp_path):
    source = corpus.write_hf_parquet(tmp_path / "hf")
    cfg = PrepareConfig(source=str(source), out=str(tmp_path / "out"), **SMALL)
    data = prepare(cfg)
    shard = Path(data.root) / next(iter(data.manifest["splits"]["val"]["files"]))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(UserError, match="does not match manifest.json"):
        open_prepared(cfg.out)
    assert prepare(cfg).fingerprint == data.fingerprint  # not reused: rebuilt, and valid again
    next((Path(data.root) / "test").glob("*.parquet")).unlink()
    with pytest.raises(UserError, match="listed in manifest.json but missing"):
        open_prepared(cfg.out)


def test_opening_checks_names_and_sizes_and_verify_reads_every_hash(ray_session, tmp_path):
    source = corpus.write_hf_parquet(tmp_path / "hf")
    cfg = PrepareConfig(source=str(source), out=str(tmp_path / "out"), **SMALL)
    data = prepare(cfg)
    for split in data.manifest["splits"].values():
        for name, f in split["files"].items():
            assert f["bytes"] == (Path(data.root) / name).stat().st_size, (
                name
            )  # as each write task reported it
    shard = Path(data.root) / data.names("train")[0]
    changed = bytearray(shard.read_bytes())
    changed[len(changed) // 2] ^= 0xFF  # the same size, other bytes
    shard.write_bytes(bytes(changed))
    assert open_prepared(cfg.out).fingerprint == data.fingerprint  # names and sizes only: nothing read
    with pytest.raises(UserError, match=f"{data.names('train')[0]} does not match manifest.json"):
        open_prepared(cfg.out, verify=True)


@pytest.mark.parametrize(
    "option, message",
    [
        (["--vocab-size", "0"], "--vocab-size must be at least 1 (got 0)"),
        (["--max-len", "0"], "--max-len must be at least 1 (got 0)"),
        (["--val-size", "50"], "--val-size 50 must be smaller than the train split (8 reviews)"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message_and_write_nothing(
    ray_session, tmp_path, capsys, option, message
):
    source = corpus.write_hf_parquet(tmp_path / "hf")
    assert main(["prepare", "--source", str(source), "--out", str(tmp_path / "out"), *option]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_full_imdb_prepare(ray_session, imdb_path, tmp_path):
    data = prepare(PrepareConfig(source=str(imdb_path), out=str(tmp_path / "imdb")))
    assert {s: data.count(s) for s in ("train", "val", "test")} == {
        "train": 23000,
        "val": 2000,
        "test": 25000,
    }
    assert data.vocab[:5] == ["the", "and", "a", "of", "to"] and len(data.vocab) == 1024
    assert data.manifest["splits"]["test"]["positive"] == 12500
    first = _shards(data.root, "test").slice(0, 1).to_pylist()[0]
    assert len(first["ids"]) == 64 and 0 < first["length"] <= 64


def test_cli_prepare_on_a_sample_of_imdb(ray_session, imdb_path, tmp_path, capsys):
    out = tmp_path / "sample"
    args = [
        "prepare",
        "--source",
        str(imdb_path),
        "--out",
        str(out),
        "--max-reviews-per-split",
        "300",
        "--val-size",
        "50",
        "--vocab-size",
        "500",
        "--max-len",
        "32",
    ]
    assert main(args) == 0
    data = open_prepared(out)
    assert {s: data.count(s) for s in ("train", "val", "test")} == {"train": 250, "val": 50, "test": 300}
    assert data.manifest["splits"]["train"]["positive"] == 125


def test_a_one_megabyte_review_and_blank_reviews_go_through(ray_session, tmp_path):
    huge = "great fun " * 100_000  # 1 MB, 200,000 tokens
    reviews = corpus.REVIEWS + [(huge, 1, "test"), ("\n\t ", 0, "test")]
    source = corpus.write_hf_parquet(tmp_path / "hf", reviews)
    data = prepare(PrepareConfig(source=str(source), out=str(tmp_path / "out"), **SMALL))
    test = _shards(data.root, "test").to_pylist()
    assert sorted(r["length"] for r in test) == [0, 0, 3, 4, 4, 6]  # blank ones kept with length 0
    assert (
        data.manifest["splits"]["test"]["truncated_share"] > 0
        and data.manifest["splits"]["test"]["tokens"] > 200_000
    )
