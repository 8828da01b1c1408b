"""tune: a real ASHA search on a tiny space writes a preset that `train --preset` accepts."""

import json
from pathlib import Path

import pytest

from rnn_models.cli import main
from rnn_models.presets import load_preset


def _trials(run: Path) -> list[tuple[float, float]]:
    """(best val accuracy at any epoch, lr) of each trial of a search, in lr order."""
    trials = []
    for trial in run.glob("run_trial_*"):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        lr = json.loads((trial / "params.json").read_text())["train"]["lr"]
        trials.append((max(r["val_accuracy"] for r in rows if "val_accuracy" in r), lr))
    return sorted(trials, key=lambda t: t[1])


@pytest.mark.slow
def test_a_tiny_search_writes_the_best_configuration_as_a_preset(ray_session, imdb_sample, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"loguniform": [1e-3, 1e-2]}, "hidden_size": {"choice": [16, 32]}}))

    def search(name: str):
        out = tmp_path / f"{name}.json"
        assert main(["tune", "--data", str(imdb_sample.root), "--archs", "mlp", "--search-space", str(space),
                     "--num-samples", "2", "--epochs", "1", "--storage", str(tmp_path / "runs"), "--name", name,
                     "--preset", "seed-fixed", "--out", str(out)]) == 0
        return load_preset(str(out)), _trials(tmp_path / "runs" / name)

    preset, trials = search("search")
    model, train = preset.resolve("mlp")
    assert 1e-3 <= train.lr <= 1e-2 and model.hidden_size in (16, 32) and train.epochs == 1
    assert preset.prepare == {"vocab_size": 1024, "max_len": 64, "strip_br": False}  # the data it was tuned on
    assert len(trials) == 2 and trials[0][1] != trials[1][1]
    best = max(score for score, _ in trials)
    assert train.lr in {lr for score, lr in trials if score == best}  # the best trial's (60 val reviews tie often)
    assert search("again")[1] == trials  # the same --seed draws the same configurations, which train the same


def test_a_bad_search_space_is_refused(tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"momentum": {"uniform": [0, 1]}}))
    assert main(["tune", "--search-space", str(space)]) == 2
    assert f"--search-space {space}: momentum: not a model or training option" in capsys.readouterr().err
