"""Initial weights: PyTorch's defaults, or Axon's (the notebook's library), and the LSTMs' forget-gate bias.

Axon (lib/axon.ex, lib/axon/initializers.ex): embeddings uniform in ±0.01 (PyTorch: N(0, 1), 100× larger),
dense and LSTM kernels glorot-uniform, each LSTM gate's input and hidden kernel on its own, biases zero.
Axon's LSTM has one bias vector per gate where PyTorch's has two (`bias_ih`, `bias_hh`, both trained, so
Adam moves their sum twice as fast); `lstm_bias="one"` holds `bias_hh` at zero. (Axon's random initial state is
the LSTM's own option: recurrent.LSTM.)
"""

import torch
from torch import nn

from rnn_models.config import ModelConfig

AXON_EMBEDDING_SCALE = 0.01
GATES = 4  # PyTorch stacks an LSTM's gates as (i, f, g, o) along the first dimension of its weights
FORGET = 1


@torch.no_grad()
def initialise(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Re-initialise `model` in place by `cfg.init` ('pytorch' keeps the defaults), then add `cfg.forget_bias` to
    every LSTM's forget-gate bias (one of its two bias vectors, so the gate's bias moves by exactly that) and,
    with `cfg.lstm_bias == "one"`, hold the other bias vector at zero (no gradient, so no optimizer moves it)."""
    for module in model.modules():
        if cfg.init == "axon":
            _axon(module)
        if not isinstance(module, nn.LSTM):
            continue
        for name, p in module.named_parameters():
            if name.startswith("bias_ih") and cfg.forget_bias:
                p.chunk(GATES)[FORGET].add_(cfg.forget_bias)
            if name.startswith("bias_hh") and cfg.lstm_bias == "one":
                p.zero_().requires_grad_(False)
    return model


def _axon(module: nn.Module) -> None:
    if isinstance(module, nn.Embedding):
        nn.init.uniform_(module.weight, -AXON_EMBEDDING_SCALE, AXON_EMBEDDING_SCALE)
    elif isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LSTM):
        for name, p in module.named_parameters():
            if name.startswith("weight"):
                for gate in p.chunk(GATES):  # (H, in) or (H, H): glorot over one gate's kernel, as Axon
                    nn.init.xavier_uniform_(gate)
            else:
                nn.init.zeros_(p)
