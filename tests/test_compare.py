"""compare: several runs' results.json side by side, with confidence intervals."""

import json
import math

import pytest

from rnn_models.cli import main
from rnn_models.report import interval


def _run(folder, preset, accuracies):
    folder.mkdir(parents=True)
    results = {
        arch: {"test_accuracy": a, "test_reviews": 25000, "parameters": 1000, "train_seconds": 60}
        for arch, a in accuracies.items()
    }
    (folder / "results.json").write_text(
        json.dumps({"config": {"preset": {"name": preset}}, "results": results})
    )
    return str(folder)


def test_interval_is_the_normal_approximation():
    assert interval(0.8, 25000) == pytest.approx(0.00496, abs=1e-5)  # 1.96 x 0.00253, worked out by hand
    assert interval(0.5, 100) == pytest.approx(0.098)  # 1.96 x 0.05
    assert math.isnan(interval(0.5, 0))


def test_runs_side_by_side(tmp_path, capsys):
    runs = [
        _run(tmp_path / "a", "seed", {"mlp": 0.62, "lstm": 0.72}),
        _run(tmp_path / "b", "tuned", {"lstm": 0.88, "bilstm": 0.89}),
    ]
    assert main(["compare", *runs, "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "seed: test accuracy (95% CI)" in table and "tuned: test accuracy (95% CI)" in table
    assert "| lstm | 72.00% ± 0.56% | 1,000 | 60 | 88.00% ± 0.40% | 1,000 | 60 |" in table
    assert "| mlp | 62.00% ± 0.60% | 1,000 | 60 | — | — | — |" in table
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert capsys.readouterr().out == table + "\n"


def test_a_run_of_several_seeds_shows_their_mean_and_sd(tmp_path, capsys):
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    rows = {
        f"lstm seed {seed}": {
            "test_accuracy": a,
            "test_reviews": 25000,
            "parameters": 1000,
            "train_seconds": s,
        }
        for seed, a, s in ((0, 0.80, 50), (1, 0.82, 70))
    }
    summary = {"lstm": {"seeds": [0, 1], "test_accuracy_mean": 0.81, "test_accuracy_sd": 0.0141421}}
    (seeded / "results.json").write_text(json.dumps({"results": rows, "seeds": summary}))
    single = _run(tmp_path / "single", "seed", {"lstm": 0.72})
    assert main(["compare", str(seeded), single, "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| lstm | 81.00% ± 1.41% (sd of 2 seeds) | 1,000 | 60 | 72.00% ± 0.56% | 1,000 | 60 |" in table
    del summary["lstm"]["seeds"]
    (seeded / "results.json").write_text(json.dumps({"results": rows, "seeds": summary}))
    assert main(["compare", str(seeded), single, "--out", str(tmp_path / "out2")]) == 2
    assert "no readable results.json" in capsys.readouterr().err
