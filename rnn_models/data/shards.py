"""Prepared shards as a Ray Data dataset, read by Ray tasks on the nodes.

A module of its own, light to import (pyarrow and Ray, no torch): every read task imports it in a fresh Ray
worker process, and importing torch there cost ~25 s of the first read on 2 cores.
"""

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import ray

from rnn_models.cluster import on_this_node
from rnn_models.resources import READ_CPUS
from rnn_models.storage import is_uri


def read_shards(files: list[str], local: bool) -> ray.data.Dataset:
    """The shards as a dataset, in file order, each read by a Ray Data task of READ_CPUS.

    The manifest lists the shards, so nothing lists a folder (Ray Data's `read_parquet` starts a listing task
    of one whole CPU, which a node whose workers hold all but a fraction of its CPUs never runs: a silent
    hang). Shards on this node's disk (`local`) are read by tasks pinned to this node, the only one that sees
    them; with no CPU where this node has none (a head of 0 CPUs), as reading a file barely needs one.
    """
    remote_args = on_this_node(READ_CPUS) if local else {"num_cpus": READ_CPUS}
    paths = ray.data.from_items([{"path": f} for f in files], override_num_blocks=max(1, len(files)))
    dataset = paths.map_batches(_read_files, batch_format="pyarrow", batch_size=None, **remote_args)
    dataset.context.execution_options.preserve_order = True  # file order: reruns see the same data order
    return dataset


def _read_files(batch: pa.Table) -> pa.Table:
    """A read task: the shards named in `batch`, read whole (a shard is one block)."""
    tables = []
    for path in batch["path"].to_pylist():
        filesystem, inner = pyarrow.fs.FileSystem.from_uri(path) if is_uri(path) else (None, path)
        tables.append(pq.read_table(inner, filesystem=filesystem))
    return pa.concat_tables(tables)
