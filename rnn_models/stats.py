"""Paired comparisons of two classifiers scored on the same reviews.

Two models' accuracies on one test split are not independent samples: overlapping confidence intervals say
little about their difference. What they disagree on does: the paired difference (a 95 % interval over the
per-review differences) and McNemar's test (only the reviews that one model gets right and the other wrong).
"""

import math
from dataclasses import dataclass

import numpy as np

PREDICTIONS_FILE = "test_predictions.parquet"  # a model's per-review test predictions, wherever it keeps them
# Its schema's metadata names how its `review` column keys a review: files without it (written before
# 2026-12-02) keyed a review by its place in the shuffled test split, which pairs only with runs prepared alike
KEYED_BY_SOURCE_ORDER = {b"review_key": b"source_order"}
Z95 = 1.96
EXACT_UP_TO = 100  # discordant reviews: an exact binomial test up to here, the chi-square approximation above


@dataclass(frozen=True)
class Paired:
    difference: float  # accuracy of a minus accuracy of b
    interval: float  # half-width of the difference's 95 % interval
    only_a: int  # reviews a gets right and b wrong
    only_b: int  # reviews b gets right and a wrong
    p_value: float  # McNemar's test, two-sided

    def line(self, a: str, b: str) -> str:
        p = p_text(self.p_value)
        return (
            f"{a} - {b}: {self.difference:+.2%} ± {self.interval:.2%} (95% CI, paired); right only: {a} "
            f"{self.only_a}, {b} {self.only_b}; McNemar p {p if p.startswith('<') else '= ' + p}"
        )


def p_text(p: float) -> str:
    """A p-value for people: three significant digits, or a bound where it underflowed to 0 (below 5e-324)."""
    return f"{p:.3g}" if p > 0 else "< 1e-300"


def paired(a_correct, b_correct) -> Paired:
    """The paired comparison of two models' per-review correctness (booleans, the same reviews in the same order)."""
    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(
            f"two equal-length lists of at least 2 reviews are needed (got {a.shape} and {b.shape})"
        )
    differences = a.astype(float) - b.astype(float)
    half_width = Z95 * differences.std(ddof=1) / math.sqrt(len(differences))
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return Paired(float(differences.mean()), float(half_width), only_a, only_b, mcnemar(only_a, only_b))


def mcnemar(only_a: int, only_b: int) -> float:
    """Two-sided p-value of McNemar's test from the discordant counts: exact (binomial, p = 1/2) for few of
    them, else the chi-square with continuity correction, (|b - c| - 1)^2 / (b + c), one degree of freedom."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    if n <= EXACT_UP_TO:
        tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2**n
        return min(1.0, 2 * tail)
    statistic = (abs(only_a - only_b) - 1) ** 2 / n
    return math.erfc(math.sqrt(statistic / 2))  # the chi-square (1 d.o.f.) survival function
