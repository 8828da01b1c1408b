"""The model registry: one class per architecture, each built from (ModelConfig, K, T), one forward signature.

Every model maps `ids` (B, T) (int64 or int32) and `lengths` (B,), the count of real tokens at the start of
each row, to one logit per review (B,). A class registered in `CLASSES` (and named in `config.ARCHS`) is
picked up by tests/test_models.py with no further change.
"""

import torch
from torch import nn

from rnn_models.config import ARCHS, ModelConfig, require
from rnn_models.models.initialise import initialise
from rnn_models.models.mlp import MLP, BagOfNgrams
from rnn_models.models.recurrent import BiLSTMClassifier, HandrolledBiLSTM, LSTMClassifier

# Every class is built the same way: (its ModelConfig, vocabulary size K, max_len T).
CLASSES: dict[str, type[nn.Module]] = {
    "mlp": MLP,  # BagOfNgrams with --pooling mean: model_class
    "lstm": LSTMClassifier,
    "bilstm": BiLSTMClassifier,
    "handrolled_bilstm": HandrolledBiLSTM,
}
# ModelConfig validates `arch` against ARCHS, so the two lists must agree or an arch is unreachable
assert tuple(CLASSES) == ARCHS, f"registry {tuple(CLASSES)} != config.ARCHS {ARCHS}"


def model_class(cfg: ModelConfig) -> type[nn.Module]:
    """The class that builds `cfg`: its architecture's, or for the MLP with mean pooling the bag of n-grams."""
    return BagOfNgrams if cfg.arch == "mlp" and cfg.pooling == "mean" else CLASSES[cfg.arch]


def model_from_config(cfg: ModelConfig, vocab_size: int, max_len: int, seed: int | None = None) -> nn.Module:
    require(vocab_size >= 1, "vocab_size", f"must be at least 1 (got {vocab_size})")
    require(max_len >= 1, "max_len", f"must be at least 1 (got {max_len})")
    cls = model_class(cfg)
    if seed is None:
        return initialise(cls(cfg, vocab_size, max_len), cfg)
    # Parameters are initialised on the CPU, so forking and seeding the CPU generator alone is
    # enough; torch.manual_seed would also reseed (and leave changed) every CUDA generator.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        return initialise(cls(cfg, vocab_size, max_len), cfg)


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
        model = model_class(cfg)(cfg, vocab_size, max_len)
    return TRAINING_BYTES_PER_PARAMETER * count_parameters(model)


__all__ = [
    "ARCHS",
    "CLASSES",
    "model_class",
    "model_from_config",
    "takes_any_length",
    "count_parameters",
    "training_bytes",
]
