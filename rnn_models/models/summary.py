"""`summarize(model, max_len)`: a text table of a model's layers, the counterpart of Axon.Display.as_graph.

One forward pass on a dummy batch, with a hook on every leaf module recording what it returned.
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from rnn_models.models import count_parameters


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(d) for d in t.shape) + ("," if t.dim() == 1 else "") + ")"


def describe(out) -> str:
    """A compact shape for whatever a layer returned: tensor, PackedSequence or an RNN's tuple."""
    if isinstance(out, PackedSequence):
        return f"packed {_shape(out.data)}"  # (N, H): N = sum of lengths, the steps actually run
    if isinstance(out, torch.Tensor):
        return _shape(out)
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], tuple):  # RNN: output, (h_n, c_n)
        return f"{describe(out[0])}; h_n, c_n {_shape(out[1][0])}"
    if isinstance(out, (tuple, list)):
        return ", ".join(describe(o) for o in out)
    return type(out).__name__


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if name and not list(m.children())]


def _record_outputs(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor):
    """Run one eval-mode forward pass; return ({leaf name: [output shapes]}, model output)."""
    seen: dict[str, list[str]] = {name: [] for name, _ in _leaves(model)}
    hooks = [
        m.register_forward_hook(lambda _m, _in, out, name=name: seen[name].append(describe(out)))
        for name, m in _leaves(model)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(ids, lengths)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return seen, logits


def summarize(model: nn.Module, max_len: int, batch_size: int = 64) -> str:
    """Table of every leaf layer (name, type, output shape, parameters), the inputs, output and total."""
    device = next(model.parameters()).device
    # id 1 (out-of-vocabulary) rather than 0, so no row is all padding
    ids = torch.ones(batch_size, max_len, dtype=torch.long, device=device)  # (B, T)
    lengths = torch.full((batch_size,), max_len, dtype=torch.long, device=device)  # (B,)
    seen, logits = _record_outputs(model, ids, lengths)

    rows = [("layer", "type", "output shape", "parameters")]
    for name, m in _leaves(model):
        params = sum(p.numel() for p in m.parameters(recurse=False))
        rows.append((name, type(m).__name__, " | ".join(seen[name]) or "(not called)", f"{params:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    table = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d:>11}" for a, b, c, d in rows]
    rule = "-" * len(table[0])
    return "\n".join(
        [
            f"{type(model).__name__}",
            f"input  ids {_shape(ids)} {str(ids.dtype).removeprefix('torch.')}, "
            f"lengths {_shape(lengths)} {str(lengths.dtype).removeprefix('torch.')}",
            rule,
            table[0],
            rule,
            *table[1:],
            rule,
            f"output {_shape(logits)} {str(logits.dtype).removeprefix('torch.')}",
            f"total parameters {count_parameters(model):,}",
        ]
    )
