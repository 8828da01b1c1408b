"""Initial weights: PyTorch's defaults, or Axon's (the notebook's library), and the LSTMs' forget-gate bias.

Axon (lib/axon.ex, lib/axon/initializers.ex): embeddings uniform in ±0.01 (PyTorch: N(0, 1), 100× larger),
dense and LSTM kernels glorot-uniform, each LSTM gate's input and hidden kernel on its own, biases zero.
(Axon also draws each LSTM's initial state glorot-uniform; here it stays zero, as in PyTorch.)
"""

import torch
from torch import nn

AXON_EMBEDDING_SCALE = 0.01
GATES = 4  # PyTorch stacks an LSTM's gates as (i, f, g, o) along the first dimension of its weights
FORGET = 1


@torch.no_grad()
def initialise(model: nn.Module, scheme: str, forget_bias: float = 0.0) -> nn.Module:
    """Re-initialise `model` in place by `scheme` ('pytorch' keeps the defaults), then add `forget_bias` to
    every LSTM's forget-gate bias (one of its two bias vectors, so the gate's bias moves by exactly that)."""
    for module in model.modules():
        if scheme == "axon":
            _axon(module)
        if isinstance(module, nn.LSTM) and forget_bias:
            for name, p in module.named_parameters():
                if name.startswith("bias_ih"):
                    p.chunk(GATES)[FORGET].add_(forget_bias)
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
