"""DDP on a real local Ray: two gloo workers train on disjoint data, end with identical weights and report\nthe same metrics, summed over both."""

import numpy as np
import pyarrow as pa
import ray.data
import ray.train
import ray.train.torch
import torch

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.models import model_from_config
from rnn_models.training.checkpoint import unwrap
from rnn_models.training.ingest import torch_batches
from rnn_models.training.loop import Sums, make_optimizer, train_epoch
from rnn_models.training.table_rows import add_up_rows
from rnn_models.training.worker import TrainWorker, all_reduced

ROWS, MAX_LEN = 128, 8


def _rows() -> pa.Table:
    """Row r starts with id r + 2, so a worker's batches tell which rows it saw."""
    ids = np.random.default_rng(0).integers(2, 200, size=(ROWS, MAX_LEN), dtype=np.int32)
    ids[:, 0] = np.arange(ROWS) + 2
    return pa.table(
        {
            "ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel()), MAX_LEN),
            "length": pa.array(np.full(ROWS, MAX_LEN, np.int32)),
            "label": pa.array(np.arange(ROWS) % 2, pa.int8()),
        }
    )


ADVERSARIAL = (0.0, 0.05)  # with it, the first of a step's two backwards skips the all-reduce


def _model() -> torch.nn.Module:
    """An LSTM with token and hashed-bigram tables, the same on every rank."""
    return model_from_config(
        ModelConfig(arch="lstm", hidden_size=16, bigram_buckets=64), 300, MAX_LEN, seed=1
    )


def _gradients(table_grads: str, rank: int, device) -> torch.Tensor:
    """Every parameter's gradient after one backward of each rank's own batch, added up across the ranks by
    DDP ('dense') or, for the embedding tables, as the rows each rank touched ('rows', table_rows.py)."""
    model = TrainWorker().wrap(_model(), table_grads)
    ids = torch.from_numpy(np.random.default_rng(rank).integers(2, 300, size=(8, MAX_LEN))).to(device)
    logits = model(ids, torch.full((8,), MAX_LEN, device=device))
    torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(8, device=device)).backward()
    add_up_rows(model)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _untouched_on_one_rank(rank: int, device) -> torch.Tensor:
    """The bigram table's gradient when only rank 0's batch has bigrams (rank 1's reviews are one token long):
    rank 1 still joins the table's gather, with no rows."""
    model = TrainWorker().wrap(_model(), "rows")
    length = MAX_LEN if rank == 0 else 1
    ids = torch.from_numpy(np.random.default_rng(rank).integers(2, 300, size=(8, length))).to(device)
    model(ids, torch.full((8,), length, device=device)).sum().backward()
    add_up_rows(model)
    return unwrap(model).inputs.bigram_embedding.weight.grad


def _trained(table_grads: str, rank: int, device) -> torch.Tensor:
    """Every weight after two steps of each rank's own batches with adversarial training, clipping and AdamW's
    weight decay, the gradients added up as in `_gradients`."""
    model = TrainWorker().wrap(_model(), table_grads)
    cfg = TrainConfig(lr=1e-2, weight_decay=0.01, grad_clip=0.5)
    draw = np.random.default_rng(rank)
    batches = [
        {
            "ids": torch.from_numpy(draw.integers(2, 300, size=(8, MAX_LEN))).to(device),
            "length": torch.full((8,), MAX_LEN, device=device),
            "label": torch.from_numpy(draw.integers(0, 2, 8).astype(np.float32)).to(device),
        }
        for _ in range(2)
    ]
    train_epoch(model, batches, make_optimizer(model, cfg), device, cfg.grad_clip, adversarial=0.05)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _probe(config):
    """The production pieces (model, DDP wrap, batches, epoch loop), recording what each rank saw: an epoch
    without adversarial training, then one with; and one step's gradients added up both ways (one worker group
    for all: its start is the costly part)."""
    device = ray.train.torch.get_device()
    rank = ray.train.get_context().get_world_rank()
    shard = ray.train.get_dataset_shard("train")
    torch.save(_untouched_on_one_rank(rank, device), f"{config['out']}/untouched-rank{rank}.pt")
    for name, run in (("gradients", _gradients), ("trained", _trained)):
        torch.save(
            {mode: run(mode, rank, device) for mode in ("dense", "rows")},
            f"{config['out']}/{name}-rank{rank}.pt",
        )
    for adversarial in ADVERSARIAL:
        model = TrainWorker().wrap(_model(), "rows")
        optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
        seen = []

        def recorded(batches):
            for batch in batches:
                seen.extend((batch["ids"][:, 0] - 2).tolist())
                yield batch

        train_epoch(
            model,
            recorded(torch_batches(shard, 16, device, drop_last=True)),
            optimizer,
            device,
            adversarial=adversarial,
        )
        weights = torch.cat([p.detach().flatten() for p in model.parameters()])
        mine = Sums(
            loss=1.5 * (rank + 1), correct=rank + 2, count=10 * (rank + 1)
        )  # rank 0: 1.5, 2, 10; 1: 3, 3, 20
        (total,) = all_reduced(mine, device=device)
        torch.save(
            {"weights": weights, "seen": seen, "total": (total.loss, total.correct, total.count)},
            f"{config['out']}/{adversarial}-rank{rank}.pt",
        )
    ray.train.report({"done": 1})


def test_two_gloo_workers_see_disjoint_data_and_agree_on_weights(ray_session, tmp_path):
    trainer = ray.train.torch.TorchTrainer(
        _probe,
        train_loop_config={"out": str(tmp_path)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=ray.train.RunConfig(name="ddp", storage_path=str(tmp_path / "storage")),
        datasets={"train": ray.data.from_arrow(_rows()).repartition(4)},
    )
    trainer.fit()
    start = torch.cat([p.flatten() for p in _model().parameters()])
    for adversarial in ADVERSARIAL:
        ranks = [torch.load(tmp_path / f"{adversarial}-rank{r}.pt") for r in (0, 1)]
        seen = [set(r["seen"]) for r in ranks]
        assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == 64, adversarial  # equal shares: 4 steps each
        assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(ROWS)), adversarial
        assert torch.equal(ranks[0]["weights"], ranks[1]["weights"]), (
            adversarial
        )  # gradients were all-reduced
        assert ranks[0]["total"] == ranks[1]["total"] == (4.5, 5, 30)  # metrics summed over both ranks
        assert not torch.allclose(ranks[0]["weights"], start), adversarial  # and training did move them
    # the embedding tables' touched rows, all-gathered and added up, give the gradients of DDP's dense all-reduce
    # (up to the order of float additions), the same on both ranks
    gradients = [torch.load(tmp_path / f"gradients-rank{r}.pt") for r in (0, 1)]
    assert torch.equal(gradients[0]["rows"], gradients[1]["rows"])
    assert torch.allclose(gradients[0]["rows"], gradients[0]["dense"], atol=1e-7)
    assert gradients[0]["rows"].abs().sum() > 0
    untouched = [torch.load(tmp_path / f"untouched-rank{r}.pt") for r in (0, 1)]
    assert torch.equal(untouched[0], untouched[1]) and untouched[0].abs().sum() > 0
    # and so the same weights after steps with adversarial training, clipping and weight decay
    trained = [torch.load(tmp_path / f"trained-rank{r}.pt") for r in (0, 1)]
    assert torch.equal(trained[0]["rows"], trained[1]["rows"])
    assert torch.allclose(trained[0]["rows"], trained[0]["dense"], atol=1e-6)
    assert not torch.allclose(trained[0]["rows"], start)
