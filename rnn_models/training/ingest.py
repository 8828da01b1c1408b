"""Feeding prepared shards to training: Ray Data datasets read on the nodes, torch batches on the workers.

Ray Data tasks read the shards (`read_shards`), one task per shard, wherever Ray runs them: a bucket's on any
node, a local folder's on the node that holds it. Small splits are read once into the object store
(`DataSpec.load`), large ones streamed from their shards every epoch. The driver only reads the manifest.
"""

import dataclasses
import logging
from dataclasses import dataclass, field

import ray
import ray.train
import torch

from rnn_models.cluster import node_resources
from rnn_models.config import TrainConfig
from rnn_models.data.prepared import READ_ERRORS, SPLITS, PreparedData, unreadable
from rnn_models.data.shards import read_shards
from rnn_models.training.loop import EVAL_BATCH, epoch_seed

# ids stay int32 (nn.Embedding takes them): the largest column is not copied to widen it
BATCH_DTYPES = {"ids": torch.int32, "length": torch.int64, "label": torch.float32, "review": torch.int64}
CHUNK_ROWS = 4096
IN_MEMORY_SHARE = 0.25  # splits read once into the object store when they fill at most this share of it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSpec:
    """What a trial needs of the prepared data; small enough to ship to every trial."""

    root: str  # the prepared folder: a path on the driver's node, or a URI
    files: dict[str, list[str]]  # split -> shard paths or URIs
    counts: dict[str, int]
    vocab: list[str]
    info: dict  # vocab_size, max_len, vocab_sha256, fingerprint, strip_br: stored in every checkpoint
    local: bool  # the shards sit on this node's disk: only tasks on this node may read them
    datasets: dict = field(default_factory=dict)  # split -> dataset already in the object store

    @classmethod
    def from_prepared(cls, data: PreparedData) -> "DataSpec":
        info = {
            "vocab_size": data.vocab_size,
            "max_len": data.max_len,
            "vocab_sha256": data.vocab_sha256,
            "fingerprint": data.fingerprint,
            "strip_br": data.manifest["options"].get("strip_br", False),
        }
        return cls(
            data.root,
            {s: data.files(s) for s in SPLITS},
            {s: data.count(s) for s in SPLITS},
            data.vocab,
            info,
            data.folder.is_local,
        )

    def dataset(self, split: str) -> ray.data.Dataset:
        """One split: from the object store if `load` put it there, else streamed from its shards."""
        if split in self.datasets:
            return self.datasets[split]
        return read_shards(self.files[split], self.local)

    def load(self, splits: tuple[str, ...] = SPLITS) -> "DataSpec":
        """Read the splits into Ray's object store once, if they are small next to it; else leave them to be
        streamed from their shards each epoch (re-reading parquet each epoch cost ~25 s per epoch with four
        trials on two cores, so small data is read once). Either way Ray Data tasks read them, not this process.
        """
        row_bytes = 4 * self.info["max_len"] + 5  # ids int32 + length int32 + label int8
        key = 8  # the test shards' `review` (int64): the key of paired comparisons
        needed = sum((row_bytes + key * (s == "test")) * self.counts[s] for s in splits)
        capacity = _object_store_bytes(here_only=self.local)
        if needed > IN_MEMORY_SHARE * capacity:
            log.info(
                "streaming the splits from their shards (%.0f MB, object store %.0f MB)",
                needed / 1e6,
                capacity / 1e6,
            )
            return self
        log.info("reading the splits into the object store (%.0f MB)", needed / 1e6)
        try:
            datasets = {s: self.dataset(s).materialize() for s in splits}
        except READ_ERRORS as e:  # a read task's error is raised here as an instance of its cause
            raise unreadable(self.root, e) from e
        return dataclasses.replace(self, datasets=datasets)

    def shares(self, workers: int) -> list[dict] | None:
        """Each rank's share of every split, cut from the splits `load` read into the object store: train in
        equal shares (DDP ranks take the same number of steps), the others keeping every review. None while a
        split is streamed: Ray Train cuts those (`Shares`). Handed to the workers in their config, these need
        none of Train's dataset actors, which cost a trial seconds to start on a small machine. (A lone worker
        trains in its trial's process and reads the splits themselves, `DataSpec.dataset`.)"""
        if set(self.datasets) != set(SPLITS):
            return None
        if workers == 1:
            return [dict(self.datasets)]
        cut = {
            split: dataset.split(workers, equal=split == "train") for split, dataset in self.datasets.items()
        }
        return [{split: cut[split][rank] for split in SPLITS} for rank in range(workers)]


class Shares(ray.train.DataConfig):
    """How a worker group gets its streamed datasets, blocks kept in order (with the seeded shuffle, the same seed
    then gives the same batches, so a rerun reproduces its metrics): train cut into equal shares (DDP ranks must
    take the same number of steps), the other splits into shares that keep every review, which may differ by a
    block (scoring runs no collective until its sums are added). A group of one iterates each whole split."""

    def __init__(self, workers: int):
        super().__init__(
            datasets_to_split="all" if workers > 1 else [],
            execution_options=ray.data.ExecutionOptions(preserve_order=True),
        )

    def configure(
        self, datasets: dict, world_size: int, worker_handles, worker_node_ids, **kwargs
    ) -> list[dict]:
        if world_size == 1:
            return super().configure(datasets, world_size, worker_handles, worker_node_ids, **kwargs)
        shares = [{} for _ in range(world_size)]
        for name, dataset in datasets.items():
            dataset = dataset.copy(dataset)
            dataset.context.execution_options = self._resolve_execution_options(name)
            for rank, share in enumerate(
                dataset.streaming_split(world_size, equal=name == "train", locality_hints=worker_node_ids)
            ):
                shares[rank][name] = share
        return shares


def _object_store_bytes(here_only: bool) -> float:
    """The object store the splits' blocks go to: this node's (`here_only`: read tasks pinned here), or the
    whole cluster's (read tasks anywhere keep their blocks where they ran)."""
    if here_only:
        return node_resources(ray.get_runtime_context().get_node_id()).get("object_store_memory", 0)
    return ray.cluster_resources().get("object_store_memory", 0)


def torch_batches(
    shard,
    batch_size: int,
    device,
    shuffle_seed: int | None = None,
    drop_last: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    bucket_batches: int = 0,
):
    """Batches of `batch_size` reviews as tensors on `device`, from a dataset or a worker's shard.

    Ray Data hands over chunks of `chunk_rows` reviews, converted to tensors once; batches are slices of
    them. Ray Data's per-batch cost (~1 ms) would otherwise be a third of an MLP step. With a seed, each
    chunk is shuffled by a seeded permutation (a local shuffle of `chunk_rows` reviews; the prepared shards
    are already shuffled as a whole). Rows left over from a chunk start the next one, so every batch but the
    last is full; `drop_last` drops that one. A rank's batch count is therefore its rows // batch_size (+1),
    whatever the bucketing: ranks with equal shards (Ray Train splits them equally) step together.

    Length buckets (`bucket_batches` > 0): each run of that many batches' rows is sorted by length and cut
    into batches, each batch cut at its longest review (ids (B, t), t ≤ max_len), and with a seed the chunk's
    batches come in a shuffled order. A batch then costs what its reviews' real lengths cost.

    Chunks are built on the CPU and, for a GPU, copied once from pinned memory without blocking, so the copy
    overlaps the steps still queued.
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    carry = None
    for chunk in shard.iter_torch_batches(
        batch_size=chunk_rows, dtypes=BATCH_DTYPES, device=torch.device("cpu")
    ):
        if generator is not None:
            chunk = _take(chunk, torch.randperm(len(chunk["label"]), generator=generator))
        if carry is not None:
            chunk = {k: torch.cat([carry[k], v]) for k, v in chunk.items()}
        n = len(chunk["label"])
        full = n - n % batch_size
        carry = {k: v[full:] for k, v in chunk.items()} if full < n else None  # stays on the CPU
        yield from _batches(
            {k: v[:full] for k, v in chunk.items()}, batch_size, device, bucket_batches, generator
        )
    if carry is not None and not drop_last:
        yield from _batches(carry, batch_size, device, bucket_batches, None)


def training_batches(shard, cfg: TrainConfig, any_length: bool, device, epoch: int, rank: int = 0):
    """One epoch of a worker's training batches by `cfg`: full batches only, in a new order every epoch (seeded
    by seed, epoch and rank, so reproducible), length-bucketed for models that take rows of any length."""
    seed = epoch_seed(cfg.seed, epoch, rank) if cfg.shuffle_buffer else None
    return torch_batches(
        shard,
        cfg.batch_size,
        device,
        seed,
        drop_last=True,
        chunk_rows=cfg.shuffle_buffer or CHUNK_ROWS,
        bucket_batches=cfg.bucket_batches if any_length else 0,
    )


def scoring_batches(dataset, device, any_length: bool):
    """Batches for scoring only (no shuffle, no review dropped): EVAL_BATCH reviews each, and for models that
    take rows of any length (`models.takes_any_length`) sorted by length within each chunk and cut at their
    longest review."""
    return torch_batches(
        dataset, EVAL_BATCH, device, bucket_batches=CHUNK_ROWS // EVAL_BATCH if any_length else 0
    )


def _batches(
    rows: dict[str, torch.Tensor],
    batch_size: int,
    device: torch.device,
    bucket_batches: int,
    generator: torch.Generator | None,
):
    """`rows` cut into batches, bucketed by length if asked (see torch_batches)."""
    n = len(rows["label"])
    starts = list(range(0, n, batch_size))
    if not bucket_batches:
        on_device = _to_device(rows, device)
        for start in starts:
            yield {k: v[start : start + batch_size] for k, v in on_device.items()}
        return
    window = bucket_batches * batch_size
    lengths = rows["length"]
    order = (
        torch.cat(
            [
                start + torch.argsort(lengths[start : start + window], stable=True)
                for start in range(0, n, window)
            ]
        )
        if n
        else lengths.new_zeros(0)
    )
    rows = _take(rows, order)
    widths = [
        max(1, int(rows["length"][s : s + batch_size].max())) for s in starts
    ]  # on the CPU: no device sync
    if generator is not None:
        shuffled = torch.randperm(len(starts), generator=generator).tolist()
        starts, widths = [starts[i] for i in shuffled], [widths[i] for i in shuffled]
    on_device = _to_device(rows, device)
    for start, width in zip(starts, widths):
        batch = {k: v[start : start + batch_size] for k, v in on_device.items()}
        yield {**batch, "ids": batch["ids"][:, :width]}


def _take(rows: dict[str, torch.Tensor], order: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[order] for k, v in rows.items()}


def _to_device(chunk: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    if device.type == "cpu":
        return chunk
    if device.type == "cuda":  # a pinned source lets the copy run asynchronously on the current stream
        return {k: v.pin_memory().to(device, non_blocking=True) for k, v in chunk.items()}
    return {k: v.to(device) for k, v in chunk.items()}
