"""`train --seeds`: one trial per architecture and seed, reported per seed and as mean ± sd."""

import json
import statistics

import pytest

from conftest import fails
from rnn_models.config import RunConfig
from rnn_models.errors import UserError
from rnn_models.report import write_report
from rnn_models.storage import Storage


def _result(arch: str, seed: int, test: float, val: float, trial: str) -> dict:
    return {
        "arch": arch,
        "trial_id": trial,
        "test_accuracy": test,
        "val_accuracy": val,
        "tested_epoch": 1,
        "epochs": 1,
        "train_seconds": 1.0,
        "samples_per_second": 10.0,
        "parameters": 5,
        "test_reviews": 100,
        "checkpoint": f"/c/{trial}",
        "model": {"arch": arch},
        "train": {"seed": seed},
        "history": [{"epoch": 1, "train_accuracy": 0.5, "val_accuracy": val}],
    }


def test_each_seed_is_a_row_and_the_summary_is_their_mean_and_sd(tmp_path):
    results = [
        _result("lstm", 0, 0.70, 0.72, "a"),
        _result("lstm", 1, 0.74, 0.75, "b"),
        _result("lstm", 2, 0.75, 0.77, "c"),
        _result("mlp", 0, 0.60, 0.61, "d"),
    ]
    table = write_report(Storage(str(tmp_path)), "run", results, {})
    document = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(document["results"]) == {"lstm seed 0", "lstm seed 1", "lstm seed 2", "mlp"}
    lstm = document["seeds"]["lstm"]
    assert set(document["seeds"]) == {"lstm"} and lstm["seeds"] == [0, 1, 2]
    assert lstm["test_accuracy_mean"] == pytest.approx(0.73) and lstm["val_accuracy_mean"] == pytest.approx(
        0.7466667
    )
    assert lstm["test_accuracy_sd"] == pytest.approx(
        statistics.stdev([0.70, 0.74, 0.75])
    )  # sample sd: 0.0265
    assert lstm["test_accuracy_sd"] == pytest.approx(0.026458, abs=1e-6)
    assert (
        "| lstm | 0, 1, 2 | 73.00% ± 2.65% | 74.67% ± 2.52% |" in table
        and "| lstm seed 1 | 74.00% ±" in table
    )


def test_a_search_keeps_its_trial_ids_and_has_no_seed_summary(tmp_path):
    results = [_result("lstm", 0, 0.70, 0.72, "a"), _result("lstm", 0, 0.74, 0.75, "b")]
    write_report(Storage(str(tmp_path)), "run", results, {})
    document = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(document["results"]) == {"lstm-a", "lstm-b"} and "seeds" not in document


def test_bad_seeds_are_refused(capsys, tmp_path):
    assert RunConfig(seeds="0, 1,2").seed_list == [0, 1, 2] and RunConfig().seed_list == []
    for bad, says in (
        ("0,x", "must be comma-separated integers"),
        ("1,1", "repeats a seed"),
        ("-1", "must be comma-separated integers"),
    ):
        with pytest.raises(UserError, match=f"--seeds {says}"):
            RunConfig(seeds=bad)
    assert "--seeds is for train" in fails(capsys, "tune", "--data", str(tmp_path), "--seeds", "0,1")
