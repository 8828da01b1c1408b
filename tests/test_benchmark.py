"""The benchmark's baselines do the same work as the pipeline, and its sections run and print on a sample."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from benchmarks import (
    gpu as benchmark_gpu,
)  # jobs/benchmarks/ (on pytest's pythonpath)
from benchmarks import (
    sections as benchmark,
)
from benchmarks.timing import ray_worker_throughput, run_spec
from conftest import wait_for
from rnn_models.ablation import split_tensors
from rnn_models.config import ModelConfig, PrepareConfig, TrainConfig
from rnn_models.data.prepared import SPLITS
from rnn_models.models import model_from_config
from rnn_models.presets import Recipe, load_preset
from rnn_models.training.ingest import DataSpec


def _rows(files) -> list[tuple]:
    table = pa.concat_tables([pq.read_table(f) for f in files])
    return sorted(
        zip(map(tuple, table["ids"].to_pylist()), table["length"].to_pylist(), table["label"].to_pylist())
    )


def test_the_plain_python_baseline_writes_what_prepare_writes(imdb_path, imdb_sample, tmp_path):
    cfg = PrepareConfig(
        source=str(imdb_path), out=str(tmp_path / "unused"), max_reviews_per_split=300, val_size=60
    )
    out = tmp_path / "python"
    assert benchmark.python_prepare(cfg, out) == imdb_sample.vocab
    for split in SPLITS:
        assert _rows([out / f"{split}.parquet"]) == _rows(imdb_sample.files(split)), split


def test_the_rule_alone_gives_the_same_tokens_three_ways():
    texts = pa.chunked_array([["Great film!<br />10/10", "", "  Ünïcode — “quotes” & $ymbols  "]])
    seconds, tokens = benchmark._rule_alone(texts)
    assert tokens["pyarrow"] == tokens["python_translate"] == tokens["python_per_character"]
    assert tokens["pyarrow"][0] == ["great", "filmbr", "1010"] and tokens["pyarrow"][1] == []
    assert all(s > 0 for s in seconds.values())


@pytest.mark.slow
def test_the_throughput_section_measures_both_paths_and_prints_them(ray_session, imdb_sample, tmp_path):
    rows = benchmark.throughput(imdb_sample, ["mlp"], tmp_path, epochs=1)
    mlp = rows["mlp"]
    assert len(mlp["bare"]) == len(mlp["ray"]) == 1 and min(mlp["bare"] + mlp["ray"]) > 0
    assert mlp["ratio"] == mlp["ray"][-1] / mlp["bare"][-1]
    table = benchmark.report({"throughput": rows})
    assert f"{rows['threads']} torch thread(s)" in table and "| mlp |" in table


def test_without_a_gpu_the_gpu_section_says_so_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # a source that does not exist: reading it, or preparing, would fail
    results = benchmark.run(
        Path("jobs/train_all.py"), str(tmp_path / "absent"), tmp_path, ["gpu"], ["mlp"], 1
    )
    assert results == {"gpu": {"skipped": "no GPU: the gpu section is skipped"}}
    assert capsys.readouterr().out == "no GPU: the gpu section is skipped\n"
    assert json.loads((tmp_path / "benchmark.json").read_text()) == results
    assert benchmark.report(results) == "## GPU\nno GPU: the gpu section is skipped\n"


def _gpu_record() -> dict:
    loops = {
        "mlp": {"bare": 9000.0, "ray": 8000.0},
        "bilstm": {"bare": 3000.0, "ray": 2500.0, "bare_unpacked": 1500.0},
    }
    run = {
        "plan": {"gpus_per_worker": 0.25},
        "archs": {"mlp": {"test_accuracy": 0.6251}, "bilstm": {"test_accuracy": 0.7214}},
    }
    return {
        "device": "NVIDIA H200",
        "torch": "2.13.0",
        "precision": "cuda: linear layers bfloat16",
        "samples_per_second": {"seed": loops, "tuned": loops},
        "train_all_seed": {"seconds": 95.0, **run},
        "best_preset": {"preset": "tuned", "seconds": 150.0, **run},
        "seconds": 420.0,
    }


def test_the_gpu_table_has_a_row_per_arch_with_both_loops_and_both_accuracies():
    table = benchmark.report({"gpu": _gpu_record()})
    assert "## GPU: NVIDIA H200, torch 2.13.0 (cuda: linear layers bfloat16)" in table
    assert "| mlp | 9,000 | 8,000 | 9,000 | 8,000 | 62.51% | 62.51% |" in table
    assert "| bilstm | 3,000 | 2,500 | 3,000 | 2,500 | 72.14% | 72.14% |" in table
    assert "bilstm seed 3,000 / 1,500; bilstm tuned 3,000 / 1,500" in table
    assert "end to end: 95 s, 0.25 GPU per trial; tuned through train: 150 s" in table


def test_a_runs_results_are_read_per_arch_with_its_resources(tmp_path):
    entry = {
        "test_accuracy": 0.8,
        "val_accuracy": 0.81,
        "epochs": 6,
        "train_seconds": 30.0,
        "samples_per_second": 5000.0,
        "parameters": 1,
    }
    document = {"config": {"plan": {"gpus_per_worker": 0.25, "workers": 1}}, "results": {"lstm": entry}}
    (tmp_path / "results.json").write_text(json.dumps(document))
    read = benchmark_gpu.read_results(tmp_path / "results.json")
    assert read["plan"]["gpus_per_worker"] == 0.25
    assert read["archs"] == {"lstm": {k: entry[k] for k in benchmark_gpu.RESULT_KEYS}}


@pytest.mark.slow
def test_the_gpu_sections_timed_loops_run_here_on_the_cpu(ray_session, imdb_sample, tmp_path):
    """The code the gpu section runs, bare and in one Ray Train worker (without a GPU here), on a sample."""
    model_cfg, cfg = Recipe(load_preset("seed")).resolve("bilstm")
    tensors = split_tensors(imdb_sample, "train")
    assert benchmark_gpu.bare_epoch(model_cfg, cfg, imdb_sample, tensors, pack=True) > 0
    spec = DataSpec.from_prepared(imdb_sample).load(splits=("train",))
    runs = {"seed/bilstm": run_spec(model_cfg, cfg, "seed", spec.info, imdb_sample.count("train"))}
    rows = ray_worker_throughput(
        runs, {"seed": spec.dataset("train")}, str(tmp_path), cpus=1, threads=1, gpus=0
    )
    assert set(rows) == {"seed/bilstm"} and rows["seed/bilstm"] > 0
    # Its Train controller ends with it: nothing left running in the caller's Ray (the tests' shared one).
    wait_for(lambda: _alive_train_controllers(ray_session) == 0, 30, "the Train controller to exit")


def _alive_train_controllers(ray_session) -> int:
    from ray.util.state import list_actors

    alive = [("class_name", "=", "TrainController"), ("state", "=", "ALIVE")]
    return len(list_actors(address=ray_session.get_runtime_context().gcs_address, filters=alive))


def test_the_synthetic_corpus_is_the_source_rebuilt_from_its_own_sentences(tmp_path):
    import corpus
    from benchmarks.scale import SENTENCE_END, synthetic_corpus

    source = corpus.write_hf_parquet(tmp_path / "hf")
    built = {
        s: pq.read_table(
            synthetic_corpus(str(source), tmp_path / "x3", factor=3)
            / "plain_text"
            / f"{s}-00000-of-00001.parquet"
        ).to_pylist()
        for s in ("train", "test")
    }
    again = pq.read_table(
        synthetic_corpus(str(source), tmp_path / "again", factor=3)
        / "plain_text"
        / "train-00000-of-00001.parquet"
    ).to_pylist()
    assert again == built["train"]  # seeded: the same corpus every time
    for split in ("train", "test"):
        originals = [(t, label) for t, label, s in corpus.REVIEWS if s == split]
        assert sorted(r["label"] for r in built[split]) == sorted(3 * [label for _, label in originals])
        for row in built[split]:  # made of sentences of reviews of the same label and split, and nothing else
            donors = {p for t, label in originals if label == row["label"] for p in SENTENCE_END.split(t)}
            assert _made_of(row["text"], donors), row


def _made_of(text: str, pieces: set[str]) -> bool:
    """Whether `text` is pieces joined by single spaces."""
    return text in pieces or any(
        text.startswith(p + " ") and _made_of(text[len(p) + 1 :], pieces) for p in pieces
    )


def test_ddp_bytes_counts_the_rows_a_batch_touches_in_each_table():
    from benchmarks.ddp_bytes import _step_bytes
    from rnn_models.models.mlp import BagOfNgrams

    model = BagOfNgrams(
        ModelConfig(arch="mlp", pooling="mean", embedding_size=4, hidden_size=3, bigram_buckets=16), 10, 4
    )
    ids = torch.tensor([[2, 3, 2, 0], [5, 5, 1, 0]])
    figures = _step_bytes(model, [ids])
    dense = sum(p.numel() for p in model.parameters()) * 4
    # tokens 0, 1, 2, 3, 5; bigrams (3a + b) mod 16 (1,000,003 = 3 mod 16): 9, 11, 6, 4, 0, 3
    assert figures["touched_rows"] == 5 + 6
    assert figures["dense_bytes"] == dense and figures["table_bytes"] == (12 + 16) * 4 * 4
    assert figures["sparse_bytes"] == dense - (12 + 16) * 4 * 4 + 11 * (4 * 4 + 8)


def test_ddp_bytes_measures_what_two_ranks_send_each_way():
    """Two gloo ranks (spawned processes) train real steps: dense, every gradient byte; rows, the other parameters' bytes
    plus each rank's touched rows (its 1-8 token ids, out of a 500-row table) with their indices."""
    from benchmarks.ddp_bytes import measured

    model_cfg, train_cfg = ModelConfig(arch="lstm", embedding_size=8, hidden_size=4), TrainConfig()
    model = model_from_config(model_cfg, 498, 4)
    table = model.inputs.embedding.weight.numel() * 4
    dense = sum(p.numel() for p in model.parameters()) * 4
    batches = [
        {"ids": torch.full((2, 4), 2 + i), "length": torch.full((2,), 4), "label": torch.ones(2)}
        for i in range(4)
    ]  # one token id a batch: each rank's steps touch one row of the table
    figures = measured(model_cfg, train_cfg, (498, 4), batches, steps=1)
    assert figures["dense"]["bytes"] == dense
    assert figures["rows"]["bytes"] == dense - table + 8 + (
        8 + 8 * 4
    )  # a count, then a row's index and values
    assert figures["dense"]["seconds"] > 0 and figures["rows"]["seconds"] > 0
