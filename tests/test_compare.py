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


def _pairs(out) -> dict[tuple[str, str], dict]:
    """comparison.json's paired comparisons by (a, b)."""
    return {(p["a"], p["b"]): p for p in json.loads((out / "comparison.json").read_text())["paired"]}


def _scored_run(
    folder, preset, right: dict[str, list[bool]], reviews: list[int] | None = None, metadata=None
):
    """A run whose architectures each keep per-review predictions in their checkpoint: `right` says, review by
    review, which ones each got right (labels alternate 1, 0, 1, ...; logits ±1)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    _run(folder, preset, {arch: sum(r) / len(r) for arch, r in right.items()})
    document = json.loads((folder / "results.json").read_text())
    for arch, correct in right.items():
        n = len(correct)
        label = np.arange(n) % 2 == 0
        logit = np.where(np.array(correct) == label, 1.0, -1.0).astype(np.float32)
        checkpoint = folder / arch / "checkpoint_000001"
        checkpoint.mkdir(parents=True)
        table = {"review": reviews or list(range(n)), "label": label.astype(np.int8), "logit": logit}
        pq.write_table(pa.table(table, metadata=metadata), checkpoint / "test_predictions.parquet")
        document["results"][arch].update(test_reviews=n, checkpoint=str(checkpoint))
    (folder / "results.json").write_text(json.dumps(document))
    return str(folder)


def test_models_scored_on_the_same_reviews_are_compared_in_pairs(tmp_path):
    """Worked by hand: lstm and mlp of run a disagree on reviews 0-3 (lstm right on 3, mlp on 1): difference
    +2/8 = +25%; McNemar exact with 4 discordant reviews, p = 2 * (1 + 4) / 16 = 0.625."""
    a = _scored_run(
        tmp_path / "a",
        "seed",
        {"lstm": [1, 1, 1, 0, 1, 1, 0, 0], "mlp": [0, 0, 0, 1, 1, 1, 0, 0]},
    )
    b = _scored_run(tmp_path / "b", "tuned", {"lstm": [1] * 8})
    other = _scored_run(tmp_path / "c", "other", {"lstm": [1] * 8}, reviews=list(range(10, 18)))
    assert main(["compare", a, b, other, "--out", str(tmp_path / "out")]) == 0
    pairs = _pairs(tmp_path / "out")
    within = pairs[("seed lstm", "seed mlp")]
    assert (within["only_a"], within["only_b"], within["difference"]) == (3, 1, 0.25)
    assert within["p_value"] == pytest.approx(0.625)
    across = pairs[("seed lstm", "tuned lstm")]
    assert (across["only_a"], across["only_b"], across["difference"]) == (0, 3, -0.375)  # lstm of a: 5 of 8
    assert across["p_value"] == pytest.approx(0.25)  # 2 * 1 / 8
    assert pairs[("seed lstm", "other lstm")] == {
        "a": "seed lstm",
        "b": "other lstm",
        "skipped": "not scored on the same test reviews",
    }
    assert ("seed mlp", "tuned lstm") not in pairs and len(
        pairs
    ) == 4  # across runs: the same architecture only
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "- seed lstm - seed mlp: +25.00% ± " in table and "McNemar p = 0.625" in table


def test_every_model_is_paired_with_the_linear_baselines(tmp_path):
    """A `rnn-models baseline` folder joins as a run: each RNN against each baseline, on the same reviews (its
    file's rows are the split in order; an older one without the `review` column reads the same)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = _scored_run(tmp_path / "a", "seed", {"lstm": [1, 1, 1, 0], "mlp": [0, 1, 1, 1]})
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    results = {
        "nb_lr": {"test_accuracy": 0.75, "features": 10},
        "tfidf_lr": {"test_accuracy": 0.5, "features": 10},
    }
    document = {"reviews": {"train": 8, "val": 2, "test": 4}, "results": results, "seconds": 3.0}
    (baseline / "baseline.json").write_text(json.dumps(document))
    label = [1, 0, 1, 0]  # nb_lr right on reviews 0-2, tfidf_lr on 0 and 3
    table = {
        "label": pa.array(label, pa.int8()),
        "nb_lr": [0.9, 0.2, 0.7, 0.6],
        "tfidf_lr": [0.8, 0.6, 0.4, 0.1],
    }
    pq.write_table(pa.table(table), baseline / "test_predictions.parquet")
    assert main(["compare", run, str(baseline), "--out", str(tmp_path / "out")]) == 0
    pairs = _pairs(tmp_path / "out")
    assert set(pairs) == {
        ("seed lstm", "seed mlp"),
        ("baseline nb_lr", "baseline tfidf_lr"),
        ("seed lstm", "baseline nb_lr"),
        ("seed lstm", "baseline tfidf_lr"),
        ("seed mlp", "baseline nb_lr"),
        ("seed mlp", "baseline tfidf_lr"),
    }
    assert (
        pairs[("seed lstm", "baseline nb_lr")]["only_a"] == 0
        and pairs[("seed lstm", "baseline nb_lr")]["only_b"] == 0
    )
    assert (
        pairs[("seed mlp", "baseline tfidf_lr")]["only_a"],
        pairs[("seed mlp", "baseline tfidf_lr")]["only_b"],
    ) == (2, 1)
    assert "| nb_lr | — | — | — | 75.00% ± " in (tmp_path / "out" / "comparison.md").read_text()


def test_a_run_of_several_seeds_is_paired_seed_by_seed(tmp_path):
    """Its architectures pair within a seed, and each seed pairs with a run of one; never two seeds of one model."""
    right = {
        "lstm seed 0": [1, 1, 1, 0],
        "lstm seed 1": [1, 1, 0, 0],
        "mlp seed 0": [0, 1, 1, 1],
        "mlp seed 1": [1, 1, 1, 1],
    }
    seeded = _scored_run(tmp_path / "seeded", "frontier", right)
    document = json.loads((tmp_path / "seeded" / "results.json").read_text())
    document["seeds"] = {
        arch: {"seeds": [0, 1], "test_accuracy_mean": 0.5, "test_accuracy_sd": 0.1}
        for arch in ("lstm", "mlp")
    }
    (tmp_path / "seeded" / "results.json").write_text(json.dumps(document))
    single = _scored_run(tmp_path / "single", "seed", {"lstm": [0, 0, 1, 1]})
    assert main(["compare", seeded, single, "--out", str(tmp_path / "out")]) == 0
    pairs = _pairs(tmp_path / "out")
    assert set(pairs) == {
        ("frontier lstm seed 0", "frontier mlp seed 0"),
        ("frontier lstm seed 1", "frontier mlp seed 1"),
        ("frontier lstm seed 0", "seed lstm"),
        ("frontier lstm seed 1", "seed lstm"),
    }
    one = pairs[("frontier lstm seed 1", "frontier mlp seed 1")]  # only mlp right on reviews 2 and 3
    assert (one["only_a"], one["only_b"], one["difference"]) == (0, 2, -0.5)


def test_reviews_keyed_by_source_order_pair_only_with_reviews_keyed_alike(tmp_path):
    """Keys of the source's order (2026-12-02 on) and places in a shuffled test split (before) can be the same
    numbers for other reviews: such runs are not paired, even when their labels happen to agree."""
    from rnn_models.stats import KEYED_BY_SOURCE_ORDER

    right = {"lstm": [1, 0, 1, 1]}
    keyed = _scored_run(tmp_path / "keyed", "frontier", right, metadata=KEYED_BY_SOURCE_ORDER)
    also = _scored_run(tmp_path / "also", "seed", right, metadata=KEYED_BY_SOURCE_ORDER)
    placed = _scored_run(tmp_path / "placed", "tuned", right)
    assert main(["compare", keyed, also, placed, "--out", str(tmp_path / "out")]) == 0
    pairs = _pairs(tmp_path / "out")
    assert pairs[("frontier lstm", "seed lstm")]["difference"] == 0
    assert pairs[("frontier lstm", "tuned lstm")]["skipped"] == "not scored on the same test reviews"
