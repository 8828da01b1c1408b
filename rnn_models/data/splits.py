"""Seeded, stratified splitting: the source's train/test become train/val/test.

Reviews are first put in a canonical order (by split, text, label), so that every source format holding
the same reviews yields the same splits, whatever order its files list them in.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rnn_models.config import PrepareConfig
from rnn_models.errors import UserError


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `n` rows drawn without replacement, keeping the share of each label."""
    positive, negative = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    n_positive = min(len(positive), round(n * len(positive) / len(labels)))
    n_positive = max(n_positive, n - len(negative))
    chosen = [rng.choice(positive, n_positive, replace=False), rng.choice(negative, n - n_positive, replace=False)]
    return np.sort(np.concatenate(chosen))


def split_reviews(reviews: pa.Table, cfg: PrepareConfig) -> dict[str, pa.Table]:
    """`reviews` (text, label, split) as shuffled train, val and test tables (text, label)."""
    rng = np.random.default_rng(cfg.seed)
    reviews = reviews.take(pc.sort_indices(reviews, [("split", "ascending"), ("text", "ascending"),
                                                     ("label", "ascending")]))
    splits = _source_splits(reviews, cfg, rng)
    if cfg.max_reviews_per_split is not None:
        splits = {name: _sample(table, cfg.max_reviews_per_split, rng) for name, table in splits.items()}
    train = splits["train"]
    if cfg.val_size >= train.num_rows:
        raise UserError(f"--val-size {cfg.val_size} must be smaller than the train split ({train.num_rows} reviews)")
    held_out = stratified_sample(_labels(train), cfg.val_size, rng)
    is_val = np.zeros(train.num_rows, dtype=bool)
    is_val[held_out] = True
    splits = {"train": train.filter(~is_val), "val": train.filter(is_val), "test": splits["test"]}
    # Shuffled so that every shard, and so every worker's share, mixes both labels.
    return {name: table.take(rng.permutation(table.num_rows)) for name, table in splits.items()}


def _labels(table: pa.Table) -> np.ndarray:
    return table["label"].to_numpy()


def _source_splits(reviews: pa.Table, cfg: PrepareConfig, rng: np.random.Generator) -> dict[str, pa.Table]:
    if reviews.num_rows == 0:
        raise UserError(f"--source {cfg.source}: no reviews in it")
    drawn = pc.any(pc.is_null(reviews["split"])).as_py()
    if drawn:  # a CSV without a split column: draw the test split
        is_test = np.zeros(reviews.num_rows, dtype=bool)
        is_test[stratified_sample(_labels(reviews), round(cfg.test_size * reviews.num_rows), rng)] = True
        reviews = reviews.set_column(2, "split", pa.array(np.where(is_test, "test", "train")))
    splits = {}
    for name in ("train", "test"):
        table = reviews.filter(pc.equal(reviews["split"], name)).drop_columns(["split"])
        if table.num_rows < 2:
            raise UserError(f"--source {cfg.source}: its {name} split has {table.num_rows} review(s); at least 2 "
                            "are needed" + (f" (--test-size {cfg.test_size} of {reviews.num_rows})" if drawn else ""))
        splits[name] = table
    return splits


def _sample(table: pa.Table, n: int, rng: np.random.Generator) -> pa.Table:
    return table if n >= table.num_rows else table.take(stratified_sample(_labels(table), n, rng))
