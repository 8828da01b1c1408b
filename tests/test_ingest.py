"""Batches from Ray Data: full batches cut from chunks, a seeded shuffle, early stopping, resume commands."""

import numpy as np
import pyarrow as pa
import pytest
import ray.data
import torch

from rnn_models.training.ingest import torch_batches
from rnn_models.training.loop import stopped_early
from rnn_models.tuning.session import resume_command


def _dataset(rows: int, blocks: int) -> ray.data.Dataset:
    ids = np.repeat(np.arange(rows, dtype=np.int32)[:, None], 4, axis=1)  # row r holds id r
    table = pa.table(
        {
            "ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel()), 4),
            "length": pa.array(np.full(rows, 4, np.int32)),
            "label": pa.array(np.arange(rows) % 2, pa.int8()),
        }
    )
    return ray.data.from_arrow([table.slice(i, rows // blocks) for i in range(0, rows, rows // blocks)])


def _rows(batches) -> list[list[int]]:
    return [b["ids"][:, 0].tolist() for b in batches]


def test_batches_are_full_across_chunk_boundaries_and_keep_the_order(ray_session):
    batches = list(torch_batches(_dataset(100, 4), 16, torch.device("cpu"), chunk_rows=30))
    assert [len(b["label"]) for b in batches] == [16] * 6 + [4]  # leftovers carried into the next chunk
    assert sum(_rows(batches), []) == list(range(100))
    assert batches[0]["ids"].dtype == torch.int32 and batches[0]["label"].dtype == torch.float32
    dropped = list(torch_batches(_dataset(100, 4), 16, torch.device("cpu"), drop_last=True, chunk_rows=30))
    assert [len(b["label"]) for b in dropped] == [16] * 6


def test_a_seed_shuffles_within_chunks_reproducibly(ray_session):
    cpu = torch.device("cpu")
    first, again = (
        _rows(torch_batches(_dataset(96, 2), 16, cpu, shuffle_seed=7, chunk_rows=48)) for _ in range(2)
    )
    other = _rows(torch_batches(_dataset(96, 2), 16, cpu, shuffle_seed=8, chunk_rows=48))
    assert first == again and first != other
    flat = sum(first, [])
    assert flat != list(range(96)) and sorted(flat[:48]) == list(range(48))  # shuffled within its chunk


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_batches_are_the_cpu_ones_copied_from_pinned_memory(ray_session):
    cpu = list(torch_batches(_dataset(100, 4), 16, torch.device("cpu"), shuffle_seed=3, chunk_rows=30))
    gpu = list(torch_batches(_dataset(100, 4), 16, torch.device("cuda"), shuffle_seed=3, chunk_rows=30))
    assert len(cpu) == len(gpu) == 7
    for a, b in zip(cpu, gpu):
        assert all(b[k].is_cuda and torch.equal(a[k], b[k].cpu()) for k in a)


def test_early_stopping_counts_epochs_since_the_best_val_accuracy():
    history = [{"val_accuracy": a} for a in (0.6, 0.7, 0.69, 0.68)]
    assert stopped_early(history, patience=2) and not stopped_early(history, patience=3)
    assert not stopped_early(history, patience=0) and not stopped_early([], patience=1)


def test_the_resume_command_repeats_the_run_with_its_name(monkeypatch):
    monkeypatch.setattr("sys.argv", ["jobs/train_all.py", "--source", "data dir", "--epochs", "3"])
    assert (
        resume_command("train-1")
        == "python jobs/train_all.py --source 'data dir' --epochs 3 --name train-1 --resume"
    )
    monkeypatch.setattr("sys.argv", ["/venv/bin/rnn-models", "train", "--name", "x", "--resume"])
    assert resume_command("x") == "rnn-models train --name x --resume"


def _varied(rows: int, blocks: int, seed: int, max_len: int = 10) -> ray.data.Dataset:
    """Row r holds id r + 1 at each of its first `length` steps, padding after: lengths drawn in [0, max_len]."""
    lengths = np.random.default_rng(seed).integers(0, max_len + 1, rows).astype(np.int32)
    ids = np.where(np.arange(max_len) < lengths[:, None], np.arange(1, rows + 1, dtype=np.int32)[:, None], 0)
    table = pa.table(
        {
            "ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.astype(np.int32).ravel()), max_len),
            "length": pa.array(lengths),
            "label": pa.array(np.arange(rows) % 2, pa.int8()),
        }
    )
    return ray.data.from_arrow([table.slice(i, rows // blocks) for i in range(0, rows, rows // blocks)])


def _review(batch, i: int) -> int:
    return int(batch["ids"][i].max()) if batch["length"][i] else -1  # its id, or -1 for an empty review


def test_length_buckets_cover_every_review_once_in_batches_cut_at_their_longest_review(ray_session):
    cpu = torch.device("cpu")
    batches = list(
        torch_batches(_varied(200, 4, seed=1), 16, cpu, shuffle_seed=5, chunk_rows=64, bucket_batches=2)
    )
    assert [len(b["label"]) for b in batches] == [16] * 12 + [8]
    lengths = torch.cat([b["length"] for b in batches])
    assert sorted(lengths.tolist()) == sorted(_varied(200, 4, seed=1).to_pandas()["length"].tolist())
    seen = sorted(_review(b, i) for b in batches for i in range(len(b["label"])) if b["length"][i])
    assert seen == sorted(set(seen)) and len(seen) == int((lengths > 0).sum())  # every non-empty review once
    for b in batches:
        assert b["ids"].shape[1] == max(1, int(b["length"].max()))  # cut at its longest review
    spread = [int(b["length"].max() - b["length"].min()) for b in batches[:-1]]
    assert sum(spread) / len(spread) < 5  # sorted within runs of 32 rows: lengths in [0, 10] cluster
    again = list(
        torch_batches(_varied(200, 4, seed=1), 16, cpu, shuffle_seed=5, chunk_rows=64, bucket_batches=2)
    )
    assert all(torch.equal(a["ids"], b["ids"]) for a, b in zip(batches, again))  # seeded: reproducible
    other = list(
        torch_batches(_varied(200, 4, seed=1), 16, cpu, shuffle_seed=6, chunk_rows=64, bucket_batches=2)
    )
    assert [b["length"].tolist() for b in batches] != [b["length"].tolist() for b in other]


def test_ranks_with_equal_shards_get_as_many_bucketed_batches_whatever_their_lengths(ray_session):
    cpu = torch.device("cpu")
    counts = {
        len(
            list(
                torch_batches(
                    _varied(120, 3, seed=s),
                    16,
                    cpu,
                    shuffle_seed=s,
                    drop_last=True,
                    chunk_rows=50,
                    bucket_batches=3,
                )
            )
        )
        for s in range(4)
    }
    assert counts == {120 // 16}  # DDP steps together: no rank waits for a batch another never sends


def read_shares(name: str, rows: int, workers: int = 2) -> list[list[int]]:
    """The ids each of `workers` ranks reads of a split called `name`, the ranks reading at once as a worker
    group does (a streaming split hands out blocks to ranks that ask)."""
    import threading

    from rnn_models.training.ingest import Shares

    shares = Shares(workers).configure(
        {name: ray.data.range(rows, override_num_blocks=8)}, workers, None, None
    )
    seen = [[] for _ in range(workers)]

    def read(rank: int) -> None:
        for batch in shares[rank][name].iter_batches(batch_size=None):
            seen[rank] += batch["id"].tolist()

    threads = [threading.Thread(target=read, args=(rank,)) for rank in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return seen


def test_scored_splits_keep_every_review_and_train_shares_are_equal(ray_session):
    val = read_shares("val", 301)
    assert sorted(val[0] + val[1]) == list(
        range(301)
    )  # every review scored, once, whatever the shares' sizes
    train = read_shares("train", 301)
    assert len(train[0]) == len(train[1]) == 150 and not set(train[0]) & set(train[1])  # DDP steps together
    alone = read_shares("test", 301, workers=1)
    assert alone == [list(range(301))]  # a lone worker reads the whole split, in order


def test_splits_in_the_object_store_are_cut_into_shares_here(ray_session):
    """Without Train's dataset actors: train in equal shares, the scored splits keeping every review; a split
    that is streamed leaves the cutting to Ray Train."""
    from rnn_models.training.ingest import DataSpec

    splits = {
        split: ray.data.range(301, override_num_blocks=8).materialize() for split in ("train", "val", "test")
    }
    spec = DataSpec(root="", files={}, counts={}, vocab=[], info={}, local=True, datasets=splits)
    shares = spec.shares(2)
    ids = lambda dataset: [row["id"] for row in dataset.iter_rows()]
    val = [ids(share["val"]) for share in shares]
    assert sorted(val[0] + val[1]) == list(range(301))
    train = [ids(share["train"]) for share in shares]
    assert len(train[0]) == len(train[1]) == 150 and not set(train[0]) & set(train[1])
    assert spec.shares(1) == [splits]  # a lone worker reads each whole split
    streamed = DataSpec(
        root="", files={}, counts={}, vocab=[], info={}, local=True, datasets={"val": splits["val"]}
    )
    assert streamed.shares(2) is None
