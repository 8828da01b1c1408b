"""Seeded, stratified train/val/test splits, independent of the order a source lists its reviews in."""

import numpy as np
import pyarrow as pa
import pytest

from rnn_models.config import PrepareConfig
from rnn_models.data.splits import split_reviews, stratified_sample
from rnn_models.errors import UserError


def _reviews(n_train=100, n_test=60, positive_share=0.3):
    rows = []
    for split, n in (("train", n_train), ("test", n_test)):
        rows += [(f"{split} review {i}", int(i < positive_share * n), split) for i in range(n)]
    return pa.table(
        {
            "text": [r[0] for r in rows],
            "label": pa.array([r[1] for r in rows], pa.int8()),
            "split": [r[2] for r in rows],
        }
    )


def _texts(splits):
    return {name: table["text"].to_pylist() for name, table in splits.items()}


def test_stratified_sample_keeps_the_label_share():
    labels = np.array([1] * 30 + [0] * 70)
    chosen = stratified_sample(labels, 20, np.random.default_rng(0))
    assert len(set(chosen)) == 20 and labels[chosen].sum() == 6


def test_val_is_held_out_of_train_stratified_and_disjoint():
    splits = split_reviews(_reviews(), PrepareConfig(val_size=20, seed=1))
    assert {k: v.num_rows for k, v in splits.items()} == {"train": 80, "val": 20, "test": 60}
    assert sum(splits["val"]["label"].to_pylist()) == 6
    texts = _texts(splits)
    assert not set(texts["train"]) & set(texts["val"])
    assert all(t.startswith("test") for t in texts["test"])


def test_splits_are_seeded_and_ignore_source_order():
    reviews, cfg = _reviews(), PrepareConfig(val_size=20, seed=1)
    shuffled = reviews.take(np.random.default_rng(5).permutation(reviews.num_rows))
    assert _texts(split_reviews(reviews, cfg)) == _texts(split_reviews(shuffled, cfg))
    assert _texts(split_reviews(reviews, cfg)) != _texts(
        split_reviews(reviews, PrepareConfig(val_size=20, seed=2))
    )


def test_max_reviews_per_split_samples_each_split():
    splits = split_reviews(_reviews(), PrepareConfig(val_size=10, max_reviews_per_split=50))
    assert {k: v.num_rows for k, v in splits.items()} == {"train": 40, "val": 10, "test": 50}


def test_unsplit_reviews_get_a_stratified_test_split():
    reviews = _reviews(n_train=200, n_test=0)
    reviews = reviews.set_column(2, "split", pa.nulls(reviews.num_rows, pa.string()))
    splits = split_reviews(reviews, PrepareConfig(val_size=10, test_size=0.25))
    assert {k: v.num_rows for k, v in splits.items()} == {"train": 140, "val": 10, "test": 50}
    assert sum(splits["test"]["label"].to_pylist()) == 15


def test_val_size_must_be_smaller_than_train():
    with pytest.raises(UserError, match="--val-size 100 must be smaller than the train split"):
        split_reviews(_reviews(), PrepareConfig(val_size=100))


def test_a_test_reviews_key_is_the_same_whatever_the_val_size_and_seed():
    """Runs prepared with another val split still pair their predictions: each test review keeps its key, its
    position in the canonical order (the prepared test shards carry it: test_prepare.py)."""
    drawn = [
        split_reviews(_reviews(), PrepareConfig(val_size=v, seed=s))["test"] for v, s in ((10, 0), (20, 7))
    ]
    tests = [t.to_pydict() for t in drawn]
    assert tests[0]["review"] != tests[1]["review"]  # another draw: the test split in another order
    keyed = [dict(zip(t["review"], zip(t["text"], t["label"]))) for t in tests]
    assert keyed[0] == keyed[1] and len(keyed[0]) == len(tests[0]["text"])  # the same reviews, the same keys
