"""Seeded, stratified splitting: the source's train/test become train/val/test.

Reviews are first put in a canonical order (by split, text, label), so that every source format holding
the same reviews yields the same splits, whatever order its files list them in. The draws need only each
review's source split and label in that order (`split_rows`), so `prepare` makes them on the driver while the
reviews themselves stay on the nodes.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rnn_models.config import PrepareConfig
from rnn_models.data.sources import NO_SPLIT, SORT_KEYS, TEST, split_codes
from rnn_models.errors import UserError


def stratified_sample(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `n` rows drawn without replacement, keeping the share of each label."""
    positive, negative = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
    n_positive = min(len(positive), round(n * len(positive) / len(labels)))
    n_positive = max(n_positive, n - len(negative))
    chosen = [
        rng.choice(positive, n_positive, replace=False),
        rng.choice(negative, n - n_positive, replace=False),
    ]
    return np.sort(np.concatenate(chosen))


def split_reviews(reviews: pa.Table, cfg: PrepareConfig) -> dict[str, pa.Table]:
    """`reviews` (text, label, split) as shuffled train, val and test tables (text, label, review: each review's
    position in the canonical order, as the prepared test shards' `review`)."""
    reviews = reviews.take(pc.sort_indices(reviews, SORT_KEYS))
    rows = split_rows(split_codes(reviews["split"]), reviews["label"].to_numpy(), cfg)
    reviews = reviews.drop_columns(["split"])
    return {
        name: reviews.take(indices).append_column("review", pa.array(indices, pa.int64()))
        for name, indices in rows.items()
    }


def split_rows(codes: np.ndarray, labels: np.ndarray, cfg: PrepareConfig) -> dict[str, np.ndarray]:
    """Positions of train, val and test reviews in the canonical order, each split in its shuffled order, from
    every review's source split code and label in that order."""
    rng = np.random.default_rng(cfg.seed)
    if len(labels) == 0:
        raise UserError(f"--source {cfg.source}: no reviews in it")
    drawn = bool((codes == NO_SPLIT).any())
    if drawn:  # a CSV without a split column: draw the test split
        is_test = np.zeros(len(labels), dtype=bool)
        is_test[stratified_sample(labels, round(cfg.test_size * len(labels)), rng)] = True
    else:
        is_test = codes == TEST
    rows = {"train": np.flatnonzero(~is_test), "test": np.flatnonzero(is_test)}
    for name, indices in rows.items():
        if len(indices) < 2:
            raise UserError(
                f"--source {cfg.source}: its {name} split has {len(indices)} review(s); at least 2 "
                "are needed" + (f" (--test-size {cfg.test_size} of {len(labels)})" if drawn else "")
            )
    if cfg.max_reviews_per_split is not None:
        rows = {
            name: _sample(indices, labels, cfg.max_reviews_per_split, rng) for name, indices in rows.items()
        }
    train = rows["train"]
    if cfg.val_size >= len(train):
        raise UserError(
            f"--val-size {cfg.val_size} must be smaller than the train split ({len(train)} reviews)"
        )
    is_val = np.zeros(len(train), dtype=bool)
    is_val[stratified_sample(labels[train], cfg.val_size, rng)] = True
    rows = {"train": train[~is_val], "val": train[is_val], "test": rows["test"]}
    # Shuffled so that every shard, and so every worker's share, mixes both labels.
    return {name: indices[rng.permutation(len(indices))] for name, indices in rows.items()}


def _sample(indices: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return indices if n >= len(indices) else indices[stratified_sample(labels[indices], n, rng)]
