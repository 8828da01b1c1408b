"""Ablation rows: each variant trains the preset's configs with its options changed, on real reviews."""

import pytest
import torch

from rnn_models.ablation import TensorShard, ablate, main, table
from rnn_models.config import ModelConfig
from rnn_models.errors import UserError
from rnn_models.models import model_from_config
from rnn_models.presets import Preset


def test_each_row_trains_the_preset_with_its_change_and_never_reads_test(imdb_sample, monkeypatch):
    import rnn_models.ablation as ablation

    read, split_tensors = [], ablation.split_tensors
    monkeypatch.setattr(
        ablation, "split_tensors", lambda data, split: read.append(split) or split_tensors(data, split)
    )
    preset = Preset(
        "p", model={"embedding_size": 8, "hidden_size": 8}, train={"epochs": 2, "bucket_batches": 2}
    )
    rows = ablate(
        imdb_sample,
        preset,
        "lstm",
        {"base": {}, "pooled, 1 epoch": {"readout": "pool", "epochs": 1}},
        threads=1,
    )
    assert read == ["train", "val"]  # the choices made from these rows never see the test split
    assert [r["variant"] for r in rows] == ["base", "pooled, 1 epoch"]
    assert len(rows[0]["val_history"]) == 2 and len(rows[1]["val_history"]) == 1
    for r in rows:
        assert r["val_accuracy"] == max(r["val_history"]) and not any("test" in key for key in r)
    vs = rows[1]["vs_first"]  # the same 60 val reviews: the accuracies' difference, split into who got what
    assert "vs_first" not in rows[0] and vs["difference"] == pytest.approx(
        rows[1]["val_accuracy"] - rows[0]["val_accuracy"]
    )
    assert vs["only_a"] - vs["only_b"] == round(60 * vs["difference"]) and 0 < vs["p_value"] <= 1
    text = table(rows)
    assert "| lstm | base | (base) |" in text and "readout=pool, epochs=1" in text and "test" not in text
    assert f"{vs['difference']:+.2%} ± {vs['interval']:.2%} | {vs['p_value']:.3g} |" in text
    assert len(TensorShard(imdb_sample, "test")) == 300


def test_val_correctness_is_each_reviews_own_whatever_order_the_length_buckets_score_in(imdb_sample):
    """The paired comparison's input: scored in length buckets (an LSTM's rows cut at their longest review),
    put back in the split's order, it equals a plain forward pass over the stored rows."""
    from rnn_models.ablation import val_correct
    from rnn_models.models import takes_any_length

    cfg = ModelConfig(arch="lstm", embedding_size=8, hidden_size=8)
    model = model_from_config(cfg, imdb_sample.vocab_size, imdb_sample.max_len, seed=3).eval()
    val = TensorShard(imdb_sample, "val")
    assert takes_any_length(cfg)  # scored in buckets, in another order than stored
    with torch.no_grad():
        logits = model(val.tensors["ids"], val.tensors["length"])
    expected = ((logits > 0) == (val.tensors["label"] > 0.5)).numpy()
    assert 0 < expected.sum() < len(expected)  # an untrained model: some right, some wrong
    assert val_correct(model, val, any_length=True).tolist() == expected.tolist()


def test_bad_variants_are_refused_by_name(imdb_sample):
    with pytest.raises(UserError, match="--variants: not JSON"):
        main(None, str(imdb_sample.root), "seed", "lstm", "{oops", 1)
    with pytest.raises(UserError, match="expected"):
        main(None, str(imdb_sample.root), "seed", "lstm", '{"a": 1}', 1)
    with pytest.raises(UserError, match="--variants typo: unknown option"):
        main(None, str(imdb_sample.root), "seed", "lstm", '{"typo": {"hiden_size": 8}}', 1)
    with pytest.raises(UserError, match="--source|--data"):
        main(None, None, "seed", "lstm", "{}", 1)
