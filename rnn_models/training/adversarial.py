"""Adversarial training on the embeddings (Miyato, Dai & Goodfellow 2017, its supervised part).

Each step trains on two losses: the batch's own, and the batch's again with every embedding output (token and
hashed-bigram embeddings) moved a small step in the direction that raises the loss most. The direction is the
first backward's gradient with respect to those outputs; each review's step is `eps` times the norm of its
embedded inputs at its real steps (padding left out of the norm, so a short review in a batch of long ones is not
pushed harder; a model that reads padding, the flattening MLP, is pushed there too, along its gradient), so the
push is in proportion whatever scale the embeddings learn. The second pass draws the first pass's dropout masks
again (word, embedding and head dropout, and Axon's random initial LSTM states: the random state is restored
between them), so the push moves exactly the inputs it was computed for. The model learns to keep its verdict in
a ball around each review, not only at the review: a regulariser that costs a second forward and backward pass
per step. (cuDNN's
dropout between stacked LSTM layers keeps a state of its own and is not replayed; the presets stack none.)

Forward hooks on the model's `nn.Embedding` modules read and move the outputs, so every model, fused or
hand-rolled, gets it without a change. Under DDP the first backward skips the gradient all-reduce
(`no_sync`); the second reduces both losses' gradients at once.
"""

import contextlib
from collections.abc import Callable

import torch
from torch import nn


def backward_with_adversary(
    model: nn.Module,
    forward: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    eps: float,
    lengths: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backpropagate the mean loss of `forward()` (which returns logits and the summed loss) and that of the
    same batch at adversarial embeddings, `lengths` (B,) the real tokens of each review. Returns the clean
    pass's logits and summed loss."""
    outputs: dict[nn.Module, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        outputs[module] = output

    masks = _RandomState(model)
    with _hooked(model, keep), _no_sync(model):
        logits, loss = forward()
        (loss / logits.numel()).backward()
    width = max((x.shape[1] for x in outputs.values()), default=0)  # the tokens' (T); hashed bigrams' T - 1
    steps = {
        module: eps * _direction(x, lengths - (width - x.shape[1]))
        for module, x in outputs.items()
        if x.grad is not None
    }
    masks.restore()  # the second pass draws the same dropout masks
    with _hooked(model, lambda module, inputs, output: output + steps[module] if module in steps else None):
        adv_logits, adv_loss = forward()
        (adv_loss / adv_logits.numel()).backward()
    return logits, loss


@torch.no_grad()
def _direction(x: torch.Tensor, real_steps: torch.Tensor) -> torch.Tensor:
    """The loss gradient at `x` (B, T, E), scaled for each review to the norm of its `x` over its first
    `real_steps` steps (its real tokens: padding left out of the norm)."""
    dims = tuple(range(1, x.dim()))
    real = torch.arange(x.shape[1], device=x.device) < real_steps.to(x.device).unsqueeze(1)  # (B, T)
    grad, inputs = x.grad.float(), x.detach().float() * real.unsqueeze(-1)
    scale = inputs.norm(dim=dims, keepdim=True) / grad.norm(dim=dims, keepdim=True).clamp_min(1e-12)
    return (grad * scale).to(x.dtype)


class _RandomState:
    """The random state the dropout masks are drawn from (the CPU's, and the model's GPU's), to draw them again."""

    def __init__(self, model: nn.Module):
        device = next(model.parameters()).device
        self.cpu = torch.get_rng_state()
        self.cuda = (device, torch.cuda.get_rng_state(device)) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda[1], self.cuda[0])


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
