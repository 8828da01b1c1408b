"""Paired comparisons on hand-worked cases: the paired interval and McNemar's test, exact and approximate."""

import math

import pytest

from rnn_models.stats import mcnemar, p_text, paired


def test_the_paired_difference_and_its_interval_by_hand():
    result = paired([1, 1, 1, 0], [1, 0, 0, 0])
    # differences 0, 1, 1, 0: mean 0.5, sample sd sqrt(1/3), interval 1.96 x sqrt(1/3) / sqrt(4)
    assert result.difference == 0.5 and result.interval == pytest.approx(1.96 * math.sqrt(1 / 3) / 2)
    assert (result.only_a, result.only_b) == (2, 0)
    assert result.p_value == 0.5  # exact: both discordant reviews on one side, 2 x (1/2)^2
    assert "a - b: +50.00% ± 56.58% (95% CI, paired); right only: a 2, b 0; McNemar p = 0.5" == result.line(
        "a", "b"
    )


def test_mcnemar_is_exact_for_few_discordant_reviews_and_chi_square_beyond():
    assert mcnemar(10, 2) == 2 * (1 + 12 + 66) / 2**12  # binomial(12, 1/2) tail, both sides: 0.0386
    assert mcnemar(2, 10) == mcnemar(10, 2)
    assert mcnemar(70, 40) == pytest.approx(0.0056915552846872955)  # chi2.sf((30 - 1)^2 / 110, 1), from scipy
    assert mcnemar(0, 0) == 1.0 and mcnemar(50, 50) == 1.0  # no evidence either way


def test_agreeing_models_differ_by_nothing_and_bad_input_is_refused():
    same = paired([True, False, True], [True, False, True])
    assert same.difference == 0 and same.interval == 0 and same.p_value == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        paired([1, 0, 1], [1, 0])


def test_a_p_value_that_underflows_is_printed_as_a_bound_not_as_zero():
    assert mcnemar(2288, 246) == 0.0  # the BiLSTM's dead head against the leaky one: below the smallest float
    assert p_text(mcnemar(2288, 246)) == "< 1e-300" and p_text(mcnemar(70, 40)) == "0.00569"
    assert (
        paired([True] * 2300 + [False] * 200, [False] * 2300 + [True] * 200)
        .line("a", "b")
        .endswith("McNemar p < 1e-300")
    )
