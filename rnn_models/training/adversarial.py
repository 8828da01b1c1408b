"""Adversarial training on the embeddings (Miyato, Dai & Goodfellow 2017, its supervised part).

Each step trains on two losses: the batch's own, and the batch's again with every embedding output (token and
hashed-bigram embeddings) moved a small step in the direction that raises the loss most. The direction is the
first backward's gradient with respect to those outputs; each review's step is `eps` times the norm of its
embedded inputs, so the push is in proportion whatever scale the embeddings learn. The model learns to keep its
verdict in a ball around each review, not only at the review: a regulariser that costs a second forward and
backward pass per step.

Forward hooks on the model's `nn.Embedding` modules read and move the outputs, so every model, fused or
hand-rolled, gets it without a change. Under DDP the first backward skips the gradient all-reduce
(`no_sync`); the second reduces both losses' gradients at once.
"""

import contextlib
from collections.abc import Callable

import torch
from torch import nn


def backward_with_adversary(
    model: nn.Module, forward: Callable[[], tuple[torch.Tensor, torch.Tensor]], eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate the mean loss of `forward()` (which returns logits and the summed loss) and that of the
    same batch at adversarial embeddings. Returns the clean pass's logits and summed loss."""
    outputs: dict[nn.Module, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        outputs[module] = output

    with _hooked(model, keep), _no_sync(model):
        logits, loss = forward()
        (loss / logits.numel()).backward()
    steps = {module: eps * _direction(x) for module, x in outputs.items() if x.grad is not None}
    with _hooked(model, lambda module, inputs, output: output + steps[module] if module in steps else None):
        adv_logits, adv_loss = forward()
        (adv_loss / adv_logits.numel()).backward()
    return logits, loss


@torch.no_grad()
def _direction(x: torch.Tensor) -> torch.Tensor:
    """The loss gradient at `x`, scaled for each review (first dimension) to the norm of that review's `x`."""
    dims = tuple(range(1, x.dim()))
    grad = x.grad.float()
    scale = x.detach().float().norm(dim=dims, keepdim=True) / grad.norm(dim=dims, keepdim=True).clamp_min(
        1e-12
    )
    return (grad * scale).to(x.dtype)


@contextlib.contextmanager
def _hooked(model: nn.Module, hook):
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Embedding)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _no_sync(model: nn.Module):
    """DDP's no_sync (gradients accumulate locally until the next backward); a no-op for a plain module."""
    return (
        model.no_sync()
        if isinstance(model, nn.parallel.DistributedDataParallel)
        else contextlib.nullcontext()
    )
