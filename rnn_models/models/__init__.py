"""The model registry: one name per architecture, one builder per name, one forward signature.

Every model maps `ids` (B, T) (int64 or int32) and `lengths` (B,), the count of real tokens at the start of
each row, to one logit per review (B,). A builder registered in `MODELS` (and named in
`config.ARCHS`) is picked up by tests/test_models.py with no further change.
"""

from dataclasses import fields
from typing import Callable

import torch
from torch import nn

from rnn_models.config import ARCHS, ModelConfig, require
from rnn_models.errors import UserError
from rnn_models.models.initialise import initialise
from rnn_models.models.mlp import MLP, BagOfNgrams
from rnn_models.models.recurrent import BiLSTMClassifier, HandrolledBiLSTM, LSTMClassifier

Builder = Callable[[ModelConfig, int, int], nn.Module]  # (cfg, vocab_size, max_len) → model


def _mlp(cfg: ModelConfig, vocab_size: int, max_len: int) -> nn.Module:
    if cfg.pooling == "mean":
        return BagOfNgrams(vocab_size, cfg.embedding_size, cfg.hidden_size, cfg.dropout, cfg.bigram_buckets)
    return MLP(vocab_size, max_len, cfg.embedding_size, cfg.hidden_size, cfg.dropout)


def _lstm(cfg: ModelConfig, vocab_size: int, max_len: int) -> nn.Module:
    return LSTMClassifier(
        vocab_size,
        cfg.embedding_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.dropout,
        cfg.readout,
        cfg.embedding_dropout,
        cfg.token_dropout,
        cfg.bigram_buckets,
    )


def _bilstm(cfg: ModelConfig, vocab_size: int, max_len: int) -> nn.Module:
    return BiLSTMClassifier(
        vocab_size,
        cfg.embedding_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.dropout,
        cfg.readout,
        cfg.embedding_dropout,
        cfg.token_dropout,
        cfg.bigram_buckets,
    )


def _handrolled_bilstm(cfg: ModelConfig, vocab_size: int, max_len: int) -> nn.Module:
    return HandrolledBiLSTM(
        vocab_size,
        cfg.embedding_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.dropout,
        cfg.merge,
        cfg.seed_faithful,
        cfg.readout,
        cfg.embedding_dropout,
        cfg.token_dropout,
        cfg.bigram_buckets,
    )


MODELS: dict[str, Builder] = {
    "mlp": _mlp,
    "lstm": _lstm,
    "bilstm": _bilstm,
    "handrolled_bilstm": _handrolled_bilstm,
}
# ModelConfig validates `arch` against ARCHS, so the two lists must agree or an arch is unreachable
assert tuple(MODELS) == ARCHS, f"registry {tuple(MODELS)} != config.ARCHS {ARCHS}"

OPTIONS = tuple(f.name for f in fields(ModelConfig) if f.name != "arch")  # what build_model accepts


def build_model(arch: str, vocab_size: int, max_len: int, seed: int | None = None, **options) -> nn.Module:
    """Build `arch` for K = `vocab_size` tokens (K+2 embedding rows) and rows of `max_len` ids.

    `options` are ModelConfig's fields (embedding_size, hidden_size, ...); a bad name or value
    raises UserError. The same `seed` gives the same initial weights.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(
            f"unknown model option(s) {', '.join(map(repr, unknown))}; known: {', '.join(OPTIONS)}"
        )
    return model_from_config(ModelConfig(arch=arch, **options), vocab_size, max_len, seed)


def model_from_config(cfg: ModelConfig, vocab_size: int, max_len: int, seed: int | None = None) -> nn.Module:
    require(vocab_size >= 1, "vocab_size", f"must be at least 1 (got {vocab_size})")
    require(max_len >= 1, "max_len", f"must be at least 1 (got {max_len})")
    builder = MODELS[cfg.arch]
    if seed is None:
        return initialise(builder(cfg, vocab_size, max_len), cfg.init, cfg.forget_bias)
    # Parameters are initialised on the CPU, so forking and seeding the CPU generator alone is
    # enough; torch.manual_seed would also reseed (and leave changed) every CUDA generator.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return initialise(builder(cfg, vocab_size, max_len), cfg.init, cfg.forget_bias)


def takes_any_length(cfg: ModelConfig) -> bool:
    """Whether the model reads rows of any length T (batches may be cut at their longest review): all but the
    flattening MLP, whose first dense layer fixes T to max_len."""
    return not (cfg.arch == "mlp" and cfg.pooling == "flatten")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


TRAINING_BYTES_PER_PARAMETER = 16  # float32 weights, gradients and Adam's two moments


def training_bytes(cfg: ModelConfig, vocab_size: int, max_len: int) -> int:
    """The memory that training `cfg` holds beside its activations, counted on the meta device: nothing is
    allocated, so a model too large for any node is refused before anything is built or started."""
    with torch.device("meta"):
        model = MODELS[cfg.arch](cfg, vocab_size, max_len)
    return TRAINING_BYTES_PER_PARAMETER * count_parameters(model)


__all__ = [
    "ARCHS",
    "MODELS",
    "OPTIONS",
    "build_model",
    "model_from_config",
    "takes_any_length",
    "count_parameters",
    "training_bytes",
]
