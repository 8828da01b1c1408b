"""One epoch of training and one pass of evaluation: plain PyTorch over any iterable of batches.

A batch is a dict of tensors: `ids` (B, T) int32 or int64, `length` (B,), `label` (B,) float32. Ray stays
out of this file, so the same loop runs in a Ray Train worker, in the benchmark's bare loop and in tests.
Both functions return running sums (loss, correct, count), which add up across workers before dividing.
Forward passes run under the device's precision policy (precision.py).
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from rnn_models.training.adversarial import backward_with_adversary
from rnn_models.training.precision import precision_for

LOSS = nn.BCEWithLogitsLoss(reduction="sum")  # the notebook's binary cross-entropy from logits
EVAL_BATCH = 512  # reviews per step when only scoring: no gradients to hold, so more than a training batch


@dataclass
class Sums:
    """Running loss, correct and count. Adding stays on the device (no host sync per batch); reading the
    numbers syncs once."""

    loss: float | torch.Tensor = 0.0
    correct: int | torch.Tensor = 0
    count: int = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss = self.loss + loss.detach().double()
        self.correct = self.correct + ((logits > 0) == (labels > 0.5)).sum()
        self.count += labels.numel()

    def as_tensor(self, device) -> torch.Tensor:
        return torch.tensor([float(self.loss), float(self.correct), self.count], dtype=torch.float64, device=device)

    @property
    def mean_loss(self) -> float:
        return float(self.loss) / self.count if self.count else math.nan

    @property
    def accuracy(self) -> float:
        return float(self.correct) / self.count if self.count else math.nan


def train_epoch(model: nn.Module, batches, optimizer: torch.optim.Optimizer, device: torch.device,
                grad_clip: float = 0.0, scheduler=None, adversarial: float = 0.0) -> Sums:
    """One pass over `batches`, one optimizer step per batch; with `adversarial`, each step also trains on the
    batch at adversarial embeddings of that relative size (adversarial.py)."""
    model.train()
    sums, precision = Sums(), precision_for(device)
    for batch in batches:
        ids, lengths, labels = batch["ids"], batch["length"], batch["label"]

        def forward():
            with precision.autocast():
                logits = model(ids, lengths)  # (B,)
                return logits, LOSS(logits.float(), labels)

        optimizer.zero_grad(set_to_none=True)
        if adversarial:
            logits, loss = backward_with_adversary(model, forward, adversarial)
        else:
            logits, loss = forward()
            (loss / labels.numel()).backward()  # mean over the batch, as the notebook
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        sums.add(loss.detach(), logits.detach(), labels)
    return sums


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device) -> Sums:
    """Loss and accuracy over every review in `batches` (no review dropped)."""
    model.eval()
    sums, precision = Sums(), precision_for(device)
    for batch in batches:
        with precision.autocast():
            logits = model(batch["ids"], batch["length"])
            loss = LOSS(logits.float(), batch["label"])
        sums.add(loss, logits, batch["label"])
    return sums
