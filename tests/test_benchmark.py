"""The benchmark's baselines do the same work as the pipeline, and its sections run and print on a sample."""

import pyarrow as pa
import pyarrow.parquet as pq

from rnn_models import benchmark
from rnn_models.config import PrepareConfig
from rnn_models.data.prepared import SPLITS


def _rows(files) -> list[tuple]:
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return sorted(zip(map(tuple, table["ids"].to_pylist()), table["length"].to_pylist(), table["label"].to_pylist()))


def test_the_plain_python_baseline_writes_what_prepare_writes(imdb_path, imdb_sample, tmp_path):
    cfg = PrepareConfig(source=str(imdb_path), out=str(tmp_path / "unused"), max_reviews_per_split=300, val_size=60)
    out = tmp_path / "python"
    assert benchmark.python_prepare(cfg, out) == imdb_sample.vocab
    for split in SPLITS:
        assert _rows([out / f"{split}.parquet"]) == _rows(imdb_sample.files(split)), split


def test_the_rule_alone_gives_the_same_tokens_three_ways():
    texts = pa.chunked_array([["Great film!<br />10/10", "", "  Ünïcode — “quotes” & $ymbols  "]])
    seconds, tokens = benchmark._rule_alone(texts)
    assert tokens["pyarrow"] == tokens["python_translate"] == tokens["python_per_character"]
    assert tokens["pyarrow"][0] == ["great", "filmbr", "1010"] and tokens["pyarrow"][1] == []
    assert set(seconds) == set(tokens)


def test_the_throughput_section_measures_both_paths_and_prints_them(ray_session, imdb_sample, tmp_path):
    rows = benchmark.throughput(imdb_sample, ["mlp"], tmp_path, epochs=1)
    mlp = rows["mlp"]
    assert len(mlp["bare"]) == len(mlp["ray"]) == 1 and min(mlp["bare"] + mlp["ray"]) > 0
    assert mlp["ratio"] == mlp["ray"][-1] / mlp["bare"][-1]
    table = benchmark.report({"throughput": rows})
    assert f"{rows['threads']} torch thread(s)" in table and "| mlp |" in table
