"""Every source format reads the same reviews; bad sources fail with errors that name the file and row."""

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import corpus
from rnn_models.data.sources import load_reviews
from rnn_models.errors import UserError


def _rows(raw):
    return sorted(zip(*(raw.table[c].to_pylist() for c in ("text", "label", "split"))))


@pytest.fixture
def sources(tmp_path):
    return {
        "hf-parquet": corpus.write_hf_parquet(tmp_path / "hf"),
        "aclimdb-dir": corpus.write_aclimdb_dir(tmp_path / "acl"),
        "aclimdb-tarball": corpus.write_tarball(tmp_path / "aclImdb_v1.tar.gz"),
        "csv": corpus.write_csv(tmp_path / "reviews.csv"),
        "csv-text-label": corpus.write_csv(tmp_path / "text_label.csv", style="text,label"),
    }


def test_every_format_reads_the_same_reviews(sources):
    expected = sorted(corpus.REVIEWS)
    for kind, path in sources.items():
        raw = load_reviews(str(path))
        assert _rows(raw) == expected, kind
        assert raw.table.schema.field("label").type == pa.int8()
        assert len(raw.sha256) == 64


def test_aclimdb_parent_directory_is_accepted(tmp_path):
    corpus.write_aclimdb_dir(tmp_path)
    assert _rows(load_reviews(str(tmp_path))) == sorted(corpus.REVIEWS)


def test_real_imdb_copy_has_25k_reviews_per_split(imdb_path):
    table = load_reviews(str(imdb_path)).table
    counts = table.group_by(["split", "label"]).aggregate([("text", "count")]).to_pylist()
    assert {(r["split"], r["label"], r["text_count"]) for r in counts} == {
        ("train", 0, 12500),
        ("train", 1, 12500),
        ("test", 0, 12500),
        ("test", 1, 12500),
    }


def test_non_utf8_bytes_are_replaced_and_counted(tmp_path):
    root = corpus.write_aclimdb_dir(tmp_path)
    (root / "train" / "pos" / "99_10.txt").write_bytes(b"caf\xe9 was great")
    raw = load_reviews(str(root))
    assert raw.decode_errors == [str(root / "train" / "pos" / "99_10.txt")]
    assert "caf\ufffd was great" in raw.table["text"].to_pylist()


def _error(source) -> str:
    with pytest.raises(UserError) as e:
        load_reviews(str(source))
    return str(e.value)


def test_missing_source(tmp_path):
    assert "no such file or directory" in _error(tmp_path / "nowhere")


def test_parquet_without_a_label_column(tmp_path):
    root = corpus.write_hf_parquet(tmp_path)
    path = root / "plain_text" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["fine"], "stars": [3]}), path)
    message = _error(root)
    assert str(path) in message and "missing column(s) label" in message


def test_parquet_with_wrong_types(tmp_path):
    root = corpus.write_hf_parquet(tmp_path)
    path = root / "plain_text" / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["fine"], "label": ["positive"]}), path)
    assert "column label has type string" in _error(root)


def test_labels_outside_0_and_1_name_the_row(tmp_path):
    root = corpus.write_hf_parquet(tmp_path)
    path = root / "plain_text" / "train-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ["a", "b", "c"], "label": [0, 1, 2]}), path)
    assert f"{path}, row index 2: label 2 is not 0 (negative) or 1 (positive)" in _error(root)


def test_corrupt_parquet(tmp_path):
    root = corpus.write_hf_parquet(tmp_path)
    path = root / "plain_text" / "train-00000-of-00001.parquet"
    path.write_bytes(path.read_bytes()[:100])
    assert f"{path}: not a readable parquet file" in _error(root)


def test_csv_with_an_unknown_sentiment(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("review,sentiment\ngood film,positive\nmeh,neutral\n")
    assert f"{path}, line 3: sentiment 'neutral' is not 'positive' or 'negative'" in _error(path)


def test_csv_errors_give_the_line_an_editor_shows(tmp_path):
    path = tmp_path / "bad.csv"  # a quoted review over two lines and a blank line before the bad row
    path.write_text('review,sentiment\n"good\nfilm",positive\n\nmeh,neutral\n')
    assert f"{path}, line 5: sentiment 'neutral'" in _error(path)


def test_a_csv_with_a_header_and_no_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("review,sentiment\n")
    assert _error(path) == f"{path}: no reviews in it (only a header: review, sentiment)"


def test_a_review_of_10_mb_is_read(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("review,sentiment\n" + "word " * 2_100_000 + ",positive\nshort,negative\n")
    assert len(load_reviews(str(path)).table["text"][0].as_py()) > 10_000_000


def test_csv_with_unknown_columns(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("body,stars\ngood film,5\n")
    assert "expected columns review,sentiment or text,label" in _error(path)


def test_corrupt_tarball(tmp_path):
    path = corpus.write_tarball(tmp_path / "aclImdb_v1.tar.gz")
    path.write_bytes(path.read_bytes()[:200])
    assert "not a readable .tar.gz archive" in _error(path)


def test_directory_in_no_known_layout(tmp_path):
    (tmp_path / "stuff").mkdir()
    assert "found neither train-*.parquet" in _error(tmp_path)


def test_hub_source_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # unresolvable, as offline
    started = time.perf_counter()
    message = _error("hf:stanfordnlp/imdb")
    assert time.perf_counter() - started < 10
    assert "cannot be reached" in message and "--source PATH" in message


def test_a_csv_column_it_does_not_use_may_change_type_between_blocks(tmp_path, monkeypatch):
    from rnn_models.data import sources

    monkeypatch.setattr(sources, "CSV_BLOCK", 200)  # a few rows per block, as 64 MB blocks of a large file
    path = tmp_path / "notes.csv"
    rows = [
        f"review {i},{'positive' if i % 2 else 'negative'},{12 if i < 20 else 'hello'}" for i in range(60)
    ]
    path.write_text("review,sentiment,note\n" + "\n".join(rows) + "\n")
    assert load_reviews(str(path)).table.num_rows == 60
