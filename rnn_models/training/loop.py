"""The training loop, plain PyTorch over any iterable of batches: `fit` runs the epochs (`train_epoch`, then
`evaluate` on val), keeps the weights to test and stops early, by the rules of `tested_epoch` and
`stopped_early`. Ray stays out of this file: the Ray workers (worker.py), the ablations and tests run it.

A batch is a dict of tensors: `ids` (B, T) int32 or int64, `length` (B,), `label` (B,) float32. Training and
scoring return running sums (loss, correct, count), which add up across workers before dividing. Forward
passes run under the device's precision policy (precision.py).
"""

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from rnn_models.config import TrainConfig
from rnn_models.training.adversarial import backward_with_adversary
from rnn_models.training.checkpoint import unwrap
from rnn_models.training.precision import precision_for
from rnn_models.training.table_rows import add_up_rows

LOSS = nn.BCEWithLogitsLoss(reduction="sum")  # the notebook's binary cross-entropy from logits
EVAL_BATCH = 512  # reviews per step when only scoring: no gradients to hold, so more than a training batch
METRIC = "val_accuracy"  # what picks a trial's tested epoch (tested_epoch), stops it early, and picks the best trial


def is_right(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each review's verdict: a logit above 0 (a probability above 0.5) says positive."""
    return (logits > 0) == (labels > 0.5)


@dataclass
class Sums:
    """Running loss, correct and count. Adding stays on the device (no host sync per batch); reading the
    numbers syncs once."""

    loss: float | torch.Tensor = 0.0
    correct: int | torch.Tensor = 0
    count: int = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.loss = self.loss + loss.detach().double()
        self.correct = self.correct + is_right(logits, labels).sum()
        self.count += labels.numel()

    def as_tensor(self, device) -> torch.Tensor:
        return torch.tensor(
            [float(self.loss), float(self.correct), self.count], dtype=torch.float64, device=device
        )

    @property
    def mean_loss(self) -> float:
        return float(self.loss) / self.count if self.count else math.nan

    @property
    def accuracy(self) -> float:
        return float(self.correct) / self.count if self.count else math.nan


def train_epoch(
    model: nn.Module,
    batches,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    grad_clip: float = 0.0,
    scheduler=None,
    adversarial: float = 0.0,
) -> Sums:
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
            logits, loss = backward_with_adversary(model, forward, adversarial, lengths)
        else:
            logits, loss = forward()
            (loss / labels.numel()).backward()  # mean over the batch, as the notebook
        add_up_rows(model)  # the embedding tables that DDP left to table_rows.py, if any
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        sums.add(loss.detach(), logits.detach(), labels)
    return sums


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: torch.device, predictions: list | None = None) -> Sums:
    """Loss and accuracy over every review in `batches` (no review dropped). With a `predictions` list, each
    batch's (review keys, labels, logits) is added to it, on the device (no host sync per batch)."""
    model.eval()
    sums, precision = Sums(), precision_for(device)
    for batch in batches:
        with precision.autocast():
            logits = model(batch["ids"], batch["length"])
            loss = LOSS(logits.float(), batch["label"])
        sums.add(loss, logits, batch["label"])
        if predictions is not None:
            predictions.append((batch.get("review"), batch["label"], logits.detach().float()))
    return sums


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.weight_decay:
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr)


def make_scheduler(optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """None for a constant rate; else `cfg.warmup` epochs of linear warm-up, then cosine decay to 0 at the last step."""
    if cfg.lr_schedule == "constant":
        return None
    warmup, total = max(1, round(steps_per_epoch * cfg.warmup)), max(1, steps_per_epoch * cfg.epochs)

    def factor(step: int) -> float:
        return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one rank's epoch: its shuffle (ingest.py) and the draws of its steps (dropout, word dropout,
    Axon's initial states). Reproducible, a resumed epoch draws as its first try did, and the ranks differ."""
    return seed * 100_003 + epoch * 101 + rank


def fit(
    model: nn.Module,
    optimizer,
    scheduler,
    cfg: TrainConfig,
    train_batches: Callable[[int], Iterable],
    val_batches: Callable[[], Iterable],
    device: torch.device,
    history: list[dict] | None = None,
    tested: dict | None = None,
    add_up=lambda *sums: sums,
    after_epoch=None,
    rank: int = 0,
) -> tuple[list[dict], dict | None]:
    """Train the epochs after those in `history` up to `cfg.epochs`, or until `cfg.patience` epochs in a row
    bring no better val accuracy. Returns the history (a dict per epoch) and the weights of the tested epoch
    (`tested_epoch`), kept on the CPU as they come: scoring them later reads no checkpoint back.

    `train_batches(epoch)` and `val_batches()` give an epoch's batches; `add_up` adds the workers' sums (DDP);
    `after_epoch(history, earlier)` runs after each epoch (a worker reports and checkpoints there), `earlier`
    being the weights to test when they are an earlier epoch's. `history` and `tested` continue a restored run.
    Each epoch's random draws are seeded by `cfg.seed`, the epoch and `rank` (`epoch_seed`).
    """
    history = list(history or [])
    for epoch in range(len(history) + 1, cfg.epochs + 1):
        if stopped_early(history, cfg.patience):
            break
        torch.manual_seed(epoch_seed(cfg.seed, epoch, rank))  # the CPU's and every GPU's generator
        started, first_batch = time.perf_counter(), []
        batches = _timing_first(train_batches(epoch), started, first_batch)
        train = train_epoch(model, batches, optimizer, device, cfg.grad_clip, scheduler, cfg.adversarial)
        seconds = _elapsed(started, device)
        val = evaluate(unwrap(model), val_batches(), device)
        train, val = add_up(train, val)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train.mean_loss,
                "train_accuracy": train.accuracy,
                "val_loss": val.mean_loss,
                "val_accuracy": val.accuracy,
                "epoch_seconds": seconds,
                "first_batch_seconds": first_batch[0] if first_batch else math.nan,  # this rank's
                "samples_per_second": train.count / seconds,
                "lr": optimizer.param_groups[0]["lr"],
            }
        )
        is_tested = tested_epoch(history, cfg) == epoch
        if is_tested:
            tested = {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}
        if after_epoch:
            after_epoch(history, None if is_tested else tested)
    return history, tested


def tested_epoch(history: list[dict], cfg: TrainConfig) -> int:
    """The epoch whose weights the test split scores: the first with the best val accuracy, or with
    `test_checkpoint` 'last' (the notebook) the last one."""
    if cfg.test_checkpoint == "last":
        return history[-1]["epoch"]
    return max(history, key=lambda h: h[METRIC])["epoch"]  # max keeps the first of equals


def stopped_early(history: list[dict], patience: int) -> bool:
    """Whether the last `patience` epochs (0: never) brought no better val accuracy than an earlier one."""
    if not patience or not history:
        return False
    best = max(range(len(history)), key=lambda i: history[i][METRIC])
    return len(history) - 1 - best >= patience


def _timing_first(batches: Iterable, started: float, seconds: list) -> Iterable:
    """`batches`, noting in `seconds` how long the first took to come: a streamed epoch's start-up (reads,
    shuffle buffer) before its first step."""
    for i, batch in enumerate(batches):
        if i == 0:
            seconds.append(time.perf_counter() - started)
        yield batch


def _elapsed(started: float, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # kernels run asynchronously: wait for the epoch's last ones
    return time.perf_counter() - started
