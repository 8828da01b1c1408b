"""tune: a real ASHA search on a tiny space writes a preset that `train --preset` accepts."""

import json
from pathlib import Path

import pytest

from rnn_models.cli import main
from rnn_models.presets import Recipe, load_preset


def _trials(run: Path) -> list[tuple[float, float]]:
    """(best val accuracy at any epoch, lr) of each trial of a search, in lr order."""
    trials = []
    for trial in run.glob("run_trial_*"):
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        params = json.loads((trial / "params.json").read_text())
        assert set(params) == {
            "arch",
            "lr",
            "hidden_size",
        }  # Tune's config: the arch and the sampled values only
        lr = params["lr"]
        trials.append((max(r["val_accuracy"] for r in rows if "val_accuracy" in r), lr))
    return sorted(trials, key=lambda t: t[1])


@pytest.mark.slow
def test_a_tiny_search_writes_the_best_configuration_as_a_preset(ray_session, imdb_sample, tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"loguniform": [1e-3, 1e-2]}, "hidden_size": {"choice": [16, 32]}}))

    def search(name: str):
        out = tmp_path / f"{name}.json"
        assert (
            main(
                [
                    "tune",
                    "--data",
                    str(imdb_sample.root),
                    "--archs",
                    "mlp",
                    "--search-space",
                    str(space),
                    "--num-samples",
                    "2",
                    "--epochs",
                    "1",
                    "--storage",
                    str(tmp_path / "runs"),
                    "--name",
                    name,
                    "--preset",
                    "seed-fixed",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        return load_preset(str(out)), _trials(tmp_path / "runs" / name)

    preset, trials = search("search")
    model, train = Recipe(preset).resolve("mlp")
    assert 1e-3 <= train.lr <= 1e-2 and model.hidden_size in (16, 32) and train.epochs == 1
    assert preset.prepare == {
        "vocab_size": 1024,
        "max_len": 64,
        "strip_br": False,
        "val_size": 60,
    }  # the data it was tuned on
    assert len(trials) == 2 and trials[0][1] != trials[1][1]
    best = max(score for score, _ in trials)
    assert train.lr in {
        lr for score, lr in trials if score == best
    }  # the best trial's (60 val reviews tie often)
    assert search("again")[1] == trials  # the same --seed draws the same configurations, which train the same


def test_a_bad_search_space_is_refused(tmp_path, capsys):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"momentum": {"uniform": [0, 1]}}))
    assert main(["tune", "--search-space", str(space)]) == 2
    assert f"--search-space {space}: momentum: not a model or training option" in capsys.readouterr().err


def test_asha_judges_each_trial_against_its_own_architecture_only():
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from rnn_models.tuning.schedulers import PerArchASHA

    def first_rung(scheduler):
        """Two LSTM trials, then two MLP trials scoring lower, at epoch 1: what the scheduler says to each."""
        scheduler.set_search_properties("val_accuracy", "max")
        trials = [
            SimpleNamespace(trial_id=f"{arch}-{i}", config={"arch": arch})
            for arch in ("lstm", "mlp")
            for i in range(2)
        ]
        for trial in trials:
            scheduler.on_trial_add(None, trial)
        scores = [0.80, 0.82, 0.62, 0.60]
        return [
            scheduler.on_trial_result(None, t, {"training_iteration": 1, "val_accuracy": v})
            for t, v in zip(trials, scores)
        ]

    asha = dict(time_attr="training_iteration", max_t=10, grace_period=1, reduction_factor=2)
    assert first_rung(ASHAScheduler(**asha))[2] == TrialScheduler.STOP  # one ASHA: the MLP loses to the LSTMs
    per_arch = first_rung(PerArchASHA(**asha))
    assert per_arch[:3] == [TrialScheduler.CONTINUE] * 3  # the best MLP goes on, judged among MLPs
    assert per_arch[3] == TrialScheduler.STOP  # the weaker MLP does not


def test_the_batch_check_sees_the_largest_batch_size_a_search_can_draw():
    from rnn_models.tuning.space import largest_value

    assert (
        largest_value({"lr": {"loguniform": [1e-4, 1e-2]}}, "batch_size", 64) == 64
    )  # not searched: the recipe's
    assert largest_value({"batch_size": {"choice": [32, 512, 64]}}, "batch_size", 64) == 512
    assert (
        largest_value({"batch_size": {"randint": [16, 129]}}, "batch_size", 64) == 128
    )  # the high end is exclusive
