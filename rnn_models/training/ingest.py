"""Feeding prepared shards to training: Ray Data datasets on the driver, torch batches on the workers."""

import dataclasses
import logging
from dataclasses import dataclass, field

import ray
import torch

from rnn_models.data.prepared import SPLITS, PreparedData

# ids stay int32 (nn.Embedding takes them): the largest column is not copied to widen it
BATCH_DTYPES = {"ids": torch.int32, "length": torch.int64, "label": torch.float32}
CHUNK_ROWS = 4096
READ_CPUS = 0.25  # per read task: reading a few MB of parquet is light, and trials share DATA_CPUS
IN_MEMORY_SHARE = 0.25  # splits read once into the object store when they fill at most this share of it

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSpec:
    """What a trial needs of the prepared data; small enough to ship to every trial."""

    files: dict[str, list[str]]
    counts: dict[str, int]
    vocab: list[str]
    info: dict  # vocab_size, max_len, vocab_sha256, fingerprint, strip_br: stored in every checkpoint
    node_id: str | None  # the node holding the files; read tasks run there
    datasets: dict = field(default_factory=dict)  # split -> dataset already in the object store

    @classmethod
    def from_prepared(cls, data: PreparedData) -> "DataSpec":
        info = {"vocab_size": data.vocab_size, "max_len": data.max_len, "vocab_sha256": data.vocab_sha256,
                "fingerprint": data.fingerprint, "strip_br": data.manifest["options"].get("strip_br", False)}
        node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        return cls({s: data.files(s) for s in SPLITS}, {s: data.count(s) for s in SPLITS}, data.vocab, info, node_id)

    def dataset(self, split: str) -> ray.data.Dataset:
        """One split: in the object store if `in_memory` put it there, else read from its parquet shards.

        The files sit on the driver's disk, so read tasks are pinned to that node; the blocks travel to
        workers on any node through the object store.
        """
        if split in self.datasets:
            return self.datasets[split]
        on_node = {"ray.io/node-id": self.node_id} if self.node_id else None
        return ray.data.read_parquet(self.files[split], num_cpus=READ_CPUS, label_selector=on_node)


    def in_memory(self) -> "DataSpec":
        """Read every split once into Ray's object store, if they are small next to it.

        Every trial then streams its epochs from memory instead of re-reading parquet each epoch; on two
        cores with four trials, the re-reading (a file-listing task and read tasks per epoch and trial,
        queueing for the one CPU Ray Data has) cost ~25 s per epoch. Larger data streams from the files.
        """
        row_bytes = 4 * self.info["max_len"] + 5  # ids int32 + length int32 + label int8
        needed = row_bytes * sum(self.counts.values())
        capacity = ray.cluster_resources().get("object_store_memory", 0)
        if needed > IN_MEMORY_SHARE * capacity:
            log.info("streaming the splits from parquet (%.0f MB, object store %.0f MB)", needed / 1e6, capacity / 1e6)
            return self
        context = ray.data.DataContext.get_current()
        previous, context.execution_options.preserve_order = context.execution_options.preserve_order, True
        try:  # blocks in file order, not in the order the reads finish: reruns see the same data order
            return dataclasses.replace(self, datasets={s: self.dataset(s).materialize() for s in self.files})
        finally:
            context.execution_options.preserve_order = previous


def torch_batches(shard, batch_size: int, device, shuffle_seed: int | None = None, drop_last: bool = False,
                  chunk_rows: int = CHUNK_ROWS):
    """Batches of `batch_size` reviews as tensors on `device`, from a dataset or a worker's shard.

    Ray Data hands over chunks of `chunk_rows` reviews, converted to tensors once; batches are slices of
    them (views, no copies). Ray Data's per-batch cost (~1 ms) would otherwise be a third of an MLP step.
    With a seed, each chunk is shuffled by a seeded permutation (a local shuffle of `chunk_rows` reviews;
    the prepared shards are already shuffled as a whole). Rows left over from a chunk start the next one,
    so every batch but the last is full; `drop_last` drops that one.
    """
    generator = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
    carry = None
    for chunk in shard.iter_torch_batches(batch_size=chunk_rows, dtypes=BATCH_DTYPES, device=device):
        if generator is not None:
            order = torch.randperm(len(chunk["label"]), generator=generator).to(device)
            chunk = {k: v[order] for k, v in chunk.items()}
        if carry is not None:
            chunk = {k: torch.cat([carry[k], v]) for k, v in chunk.items()}
        n = len(chunk["label"])
        full = n - n % batch_size
        for start in range(0, full, batch_size):
            yield {k: v[start:start + batch_size] for k, v in chunk.items()}
        carry = {k: v[full:] for k, v in chunk.items()} if full < n else None
    if carry is not None and not drop_last:
        yield carry
