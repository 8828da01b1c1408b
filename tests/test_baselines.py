"""The linear baselines: prepare's splits (dev disjoint from train and test, seeded), C chosen on dev, the test
split scored once by the chosen model, its predictions and the paired comparison written."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import fails
from rnn_models.baselines import C_GRID, _splits, run_baselines
from rnn_models.config import BaselineConfig
from rnn_models.stats import paired

pytest.importorskip("sklearn")


def _texts(table) -> set[str]:
    return set(table["text"].to_pylist())


def test_the_dev_split_is_disjoint_stratified_and_seeded(imdb_path):
    cfg = BaselineConfig(source=str(imdb_path), dev_size=100, max_reviews_per_split=500)
    splits = _splits(cfg)
    train, dev, test = (_texts(splits[s]) for s in ("train", "val", "test"))
    assert (len(train), len(dev), len(test)) == (400, 100, 500) and not (
        train & dev or dev & test or train & test
    )
    assert sorted(splits["val"]["label"].to_pylist()) == [0] * 50 + [1] * 50
    assert _texts(_splits(cfg)["val"]) == dev  # the same seed: the same reviews
    other = BaselineConfig(source=str(imdb_path), dev_size=100, max_reviews_per_split=500, seed=1)
    assert _texts(_splits(other)["val"]) != dev


def test_each_model_takes_its_best_dev_c_and_scores_test_once(imdb_path, tmp_path, monkeypatch):
    import rnn_models.baselines as baselines

    scored = []  # the feature matrices each fitted model was asked to score
    fit = baselines._fit

    def counting_fit(features, labels, c, sklearn):
        model = fit(features, labels, c, sklearn)
        predict, predict_proba = model.predict, model.predict_proba
        model.predict = lambda x: scored.append(("dev", x.shape[0])) or predict(x)
        model.predict_proba = lambda x: scored.append(("test", x.shape[0])) or predict_proba(x)
        return model

    monkeypatch.setattr(baselines, "_fit", counting_fit)
    cfg = BaselineConfig(source=str(imdb_path), out=str(tmp_path), dev_size=200, max_reviews_per_split=800)
    document = run_baselines(cfg)
    assert scored.count(("test", 800)) == 2 and scored.count(("dev", 200)) == 2 * len(C_GRID)
    assert document["reviews"] == {"train": 600, "val": 200, "test": 800}
    predictions = pq.read_table(tmp_path / "test_predictions.parquet").to_pydict()
    labels = np.array(predictions["label"])
    assert list(labels) == _splits(cfg)["test"]["label"].to_pylist()  # the test split, in its order
    assert predictions["review"] == _splits(cfg)["test"]["review"].to_pylist()  # keyed as the prepared shards
    correct = {}
    for model, r in document["results"].items():
        by_c = {float(c): a for c, a in r["dev_accuracy_by_C"].items()}
        assert r["C"] == max(C_GRID, key=lambda c: (by_c[c], -c)) and r["dev_accuracy"] == by_c[r["C"]]
        correct[model] = (np.array(predictions[model]) >= 0.5) == labels
        assert r["test_accuracy"] == correct[model].mean() > 0.7, model  # well above chance on 600 reviews
    comparison = paired(correct["nb_lr"], correct["tfidf_lr"])
    assert (
        document["paired"]["only_a"] == comparison.only_a
        and document["paired"]["p_value"] == comparison.p_value
    )
    assert json.loads((tmp_path / "baseline.json").read_text())["results"] == document["results"]
    assert "| nb_lr |" in (tmp_path / "baseline.md").read_text()


def test_bad_baseline_options_are_refused(capsys, tmp_path):
    assert "--dev-size must be at least 2 (got 1)" in fails(capsys, "baseline", "--dev-size", "1")
    assert "not a URI" in fails(capsys, "baseline", "--out", "s3://bucket/baseline")
    assert not list(tmp_path.iterdir())
