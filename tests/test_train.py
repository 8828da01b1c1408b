"""All four architectures through Ray Tune on real IMDB reviews (one worker each, training in its trial's
process), then the report. Worker groups of several DDP ranks: test_ddp.py, test_faults.py, test_three_nodes.py."""

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from conftest import assert_predictions_of_every_review, start_ray
from rnn_models.cli import main
from rnn_models.config import ARCHS, RunConfig
from rnn_models.errors import UserError
from rnn_models.presets import Recipe
from rnn_models.tuning.train import train

pytestmark = pytest.mark.slow  # minutes: real training through Ray


STARTED = Counter()  # the classes of the actors the run below started, and how many of each


@pytest.fixture(scope="module")
def run(imdb_sample, tmp_path_factory):
    """One real run of all four architectures, 2 epochs, shared by the tests of this module."""
    start_ray()  # the shared Ray, which a test before may have stopped: else `train` starts and ends one of its own
    storage = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(data=str(imdb_sample.root), storage=str(storage), name="e2e")
    before = _actors()
    result = train(cfg, Recipe(options=TRAINING))
    STARTED.update(name for actor_id, name in _actors().items() if actor_id not in before)
    return result, storage / "e2e"


def _actors() -> dict[str, str]:
    """Every actor the GCS lists, by id: its class, unqualified (the same class was listed in one run as
    `ImplicitFunc`, in another as `wrap_function.<locals>.ImplicitFunc`). By id, not by count per class: after
    test_search.py's runs on the same Ray, the counts per class before and after this run came out equal."""
    import ray
    from ray.util.state import list_actors

    actors = list_actors(
        address=ray.get_runtime_context().gcs_address, limit=10_000, raise_on_missing_output=False
    )
    return {actor.actor_id: actor.class_name.rsplit(".", 1)[-1] for actor in actors}


TRAINING = {
    "epochs": 2,
    "lr": 1e-3,
    "bucket_batches": 4,
}  # length buckets: batches cut at their longest review


def test_every_architecture_is_trained_tested_and_reported(run):
    result, folder = run
    document = json.loads((folder / "results.json").read_text())
    assert list(document["results"]) == list(ARCHS)
    for arch, r in document["results"].items():
        history = next(t for t in result["results"] if t["arch"] == arch)["history"]
        vals = [h["val_accuracy"] for h in history]
        assert r["tested_epoch"] == 1 + vals.index(max(vals)) and r["val_accuracy"] == max(vals), (
            arch
        )  # first best
        assert r["test_reviews"] == 300 and isinstance(r["test_reviews"], int)  # every test review, counted
        assert round(r["test_accuracy"] * 300) / 300 == pytest.approx(
            r["test_accuracy"]
        )  # a share of 300 reviews
        assert r["epochs"] == 2
        assert r["parameters"] > 0 and r["samples_per_second"] > 0
        tested = json.loads((Path(r["checkpoint"]) / "meta.json").read_text())  # in the trial's own folder
        assert r["checkpoint"].startswith(folder.as_posix()) and f"arch={arch}_" in r["checkpoint"]
        assert tested["epoch"] == r["tested_epoch"] and tested["test"]["test_accuracy"] == r["test_accuracy"]
        assert_predictions_of_every_review(Path(r["checkpoint"]), r)
    assert document["data"]["reviews"] == {"train": 240, "val": 60, "test": 300}
    table = (folder / "results.md").read_text()
    assert all(f"| {arch} |" in table for arch in ARCHS)
    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_architectures_of_a_run_are_compared_in_pairs(run, tmp_path):
    from rnn_models.compare import compare

    _, folder = run
    table = compare([str(folder)], str(tmp_path))
    pairs = json.loads((tmp_path / "comparison.json").read_text())["paired"]
    assert len(pairs) == 6 and all(
        "p_value" in p for p in pairs
    )  # every two of the four, on the same reviews
    assert "McNemar p = " in table


def test_a_trial_starts_only_the_processes_it_uses(run):
    """Each actor is a Python process that costs a trial seconds of CPU to start on two cores: a lone worker
    trains in its trial's process, with none of Ray Train's (controller, worker, synchronization, the queue
    that hands Train's reports to Tune)."""
    assert STARTED["ImplicitFunc"] == len(ARCHS), STARTED
    assert (
        sum(
            STARTED[name]
            for name in ("TrainController", "RayTrainWorker", "SynchronizationActor", "_QueueActor")
        )
        == 0
    ), STARTED


def test_every_epoch_was_reported_to_tune_as_it_happened(run):
    result, folder = run
    for trial in result["results"]:
        assert [h["epoch"] for h in trial["history"]] == [1, 2]
        progress = (
            next(folder.glob(f"run_trial_*arch={trial['arch']}_*/progress.csv")).read_text().splitlines()
        )
        assert (
            len(progress) == 1 + 4
        )  # header, two epochs, the workers' test scores, the trial's final result
    assert list(folder.glob("run_trial_*/events.out.tfevents.*"))  # TensorBoard logs


def test_evaluate_command_reproduces_the_test_accuracy(run, imdb_sample, capsys):
    result, folder = run
    lstm = next(r for r in result["results"] if r["arch"] == "lstm")
    assert main(["evaluate", "--checkpoint", lstm["checkpoint"], "--data", str(imdb_sample.root)]) == 0
    assert f"test accuracy {lstm['test_accuracy']:.4f}" in capsys.readouterr().out


def test_an_existing_run_name_is_refused_without_resume(run, imdb_sample):
    result, folder = run
    cfg = RunConfig(data=str(imdb_sample.root), storage=str(folder.parent), name="e2e")
    with pytest.raises(UserError, match="already exists; add --resume"):
        train(cfg, Recipe(options={"epochs": 1}))
    with pytest.raises(UserError, match="there is no run to resume at .*/none"):
        train(
            RunConfig(data=str(imdb_sample.root), storage=str(folder.parent), name="none"),
            Recipe(),
            resume=True,
        )


def test_a_run_keeps_the_options_it_started_with(run):
    result, folder = run
    kept = Recipe.from_dict(json.loads((folder / "recipe.json").read_text()))
    assert kept == Recipe(options=TRAINING)  # what --resume trains with, whatever its command line says
    for trial in result["results"]:  # each trial reported the configs it resolved from it
        assert (trial["model"], trial["train"]) == tuple(map(asdict, kept.resolve(trial["arch"])))


def test_the_same_seed_gives_the_same_metrics_and_storage_takes_a_uri(run, imdb_sample, tmp_path):
    result, folder = run
    storage = f"file://{tmp_path}/uri"  # any URI pyarrow opens; file:// needs no cloud
    again = train(
        RunConfig(data=str(imdb_sample.root), archs="lstm", storage=storage, name="again"),
        Recipe(options={**TRAINING, "test_checkpoint": "last"}),
    )["results"][0]
    assert json.loads((tmp_path / "uri" / "again" / "results.json").read_text())["results"]["lstm"]
    first = next(r for r in result["results"] if r["arch"] == "lstm")
    timing = {"epoch_seconds", "first_batch_seconds", "samples_per_second"}
    strip = lambda history: [{k: v for k, v in h.items() if k not in timing} for h in history]
    assert strip(again["history"]) == strip(first["history"])
    assert (
        again["tested_epoch"] == 2 and again["val_accuracy"] == again["history"][-1]["val_accuracy"]
    )  # the last
    # (Whether both test scores agree depends on which epoch the first run tested; the equal histories above, every
    # epoch's train and val metrics, are the determinism check.)


def test_seeds_train_one_trial_per_seed_and_report_their_mean(imdb_sample, tmp_path):
    start_ray()
    cfg = RunConfig(data=str(imdb_sample.root), storage=str(tmp_path), name="seeds", archs="mlp", seeds="0,1")
    result = train(cfg, Recipe(options={"epochs": 1, "lr": 1e-3}))
    by_seed = {r["train"]["seed"]: r for r in result["results"]}
    assert (
        sorted(by_seed) == [0, 1] and by_seed[0]["history"] != by_seed[1]["history"]
    )  # other weights, other runs
    document = json.loads((tmp_path / "seeds" / "results.json").read_text())
    assert set(document["results"]) == {"mlp seed 0", "mlp seed 1"}
    mean = (by_seed[0]["test_accuracy"] + by_seed[1]["test_accuracy"]) / 2
    assert document["seeds"]["mlp"]["seeds"] == [0, 1] and document["seeds"]["mlp"][
        "test_accuracy_mean"
    ] == pytest.approx(mean)
