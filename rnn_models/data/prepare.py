"""`rnn-models prepare`: raw reviews → tokenized parquet shards, as Ray Data operations.

    read (driver) → split (seeded, stratified) → blocks in the object store → two passes of map_batches:
      1. normalise, count tokens and lengths per block (Ray tasks; merged on the driver) → vocabulary
      2. normalise, encode and write each block as one shard (Ray tasks, straight to the output; each reports
         its shard's rows, bytes and SHA-256) → the driver writes vocab.json, then manifest.json

A local `--out` is built in a temporary directory that replaces it only once complete, by tasks on this
node (the only one that sees it). A URI `--out` (`s3://…`) is written in place by tasks on any node, its
old manifest deleted first and the new one written last: never a manifest beside shards it does not describe.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rnn_models.cluster import connect, on_this_node
from rnn_models.config import PrepareConfig
from rnn_models.data.prepared import FORMAT_VERSION, SPLITS, PreparedData, open_prepared
from rnn_models.data.sources import RawReviews, load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import encode, normalise
from rnn_models.errors import UserError
from rnn_models.files import atomic_directory
from rnn_models.storage import Storage, is_uri

log = logging.getLogger(__name__)


def default_data_dir(prepare_values: dict) -> str:
    """data/prepared-k<vocab>-t<max len>[-nobr][-n<reviews>][-v<val>][-s<seed>]: one folder per way of
    preparing (defaults left out of the name), so that presets and seeds never overwrite each other's data."""
    cfg, default = PrepareConfig(**prepare_values), PrepareConfig()
    name = f"data/prepared-k{cfg.vocab_size}-t{cfg.max_len}" + ("-nobr" if cfg.strip_br else "")
    name += f"-n{cfg.max_reviews_per_split}" if cfg.max_reviews_per_split else ""
    name += f"-v{cfg.val_size}" if cfg.val_size != default.val_size else ""
    return name + (f"-s{cfg.seed}" if cfg.seed != default.seed else "")


def prepare(cfg: PrepareConfig, force: bool = False, address: str | None = None) -> PreparedData:
    """Prepare `cfg.source` into `cfg.out` (a path or URI), or reuse `cfg.out` if it already holds exactly that.

    Ray (the cluster at `address`, see `connect`) is only started when there is work to do.
    """
    started = time.perf_counter()
    log.info("reading %s", cfg.source)
    raw = load_reviews(cfg.source)
    fingerprint = _fingerprint(raw, cfg)
    held = None if force else _held(cfg.out, fingerprint)
    if held:
        log.info("%s already holds this data (fingerprint %s): reusing it; --force rebuilds", cfg.out, fingerprint[:12])
        return held
    splits = split_reviews(raw.table, cfg)
    connect(address)
    reviews = ray.data.from_arrow(_blocks(splits, cfg.num_shards))  # one block per future shard
    with _output(cfg.out) as folder:
        log.info("normalising and counting %d reviews", reviews.count())
        summaries = _collect(reviews.map_batches(_summarise_block, batch_format="pyarrow", batch_size=None,
                                                 fn_kwargs={"strip_br": cfg.strip_br}))
        vocab = count_vocabulary(summaries, cfg.vocab_size)
        log.info("encoding and writing the shards")
        files = _write_shards(reviews, vocab, cfg, folder)
        stats = {name: {**_split_stats(splits[name], summaries, vocab, name, cfg.max_len), "files": files[name]}
                 for name in SPLITS}
        vocab_json = (json.dumps(vocab.to_pylist(), ensure_ascii=False) + "\n").encode()
        folder.write(vocab_json, "vocab.json")
        manifest = _manifest(raw, cfg, fingerprint, stats, vocab_json, time.perf_counter() - started)
        folder.write(json.dumps(manifest, indent=2).encode() + b"\n", "manifest.json")  # last: the folder is whole
    log.info("%s", summary(manifest))
    return open_prepared(cfg.out)


@contextlib.contextmanager
def _output(out: str):
    """The folder the shards are written to: a temporary local one renamed into place as `out` when complete,
    or, for a URI, `out` itself, emptied of its manifest and shards first."""
    if not is_uri(out):
        with atomic_directory(Path(out)) as tmp:
            yield Storage(str(tmp), option="--out")
        return
    folder = Storage(out, option="--out")
    folder.check_writable()  # before the work, not after it
    folder.delete("manifest.json")
    for name in folder.files(".parquet"):
        if name.split("/")[0] in SPLITS:
            folder.delete(name)
    yield folder
    log.info("written to %s", folder.root)


def _held(out: str, fingerprint: str) -> PreparedData | None:
    """The prepared data at `out` if it is exactly this (every file's hash verified against its manifest), else None."""
    try:
        data = open_prepared(out, verify=True)
    except UserError:
        return None  # absent or damaged: rebuild
    return data if data.fingerprint == fingerprint else None


def _fingerprint(raw: RawReviews, cfg: PrepareConfig) -> str:
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("source", "out")}
    key = json.dumps({"format": FORMAT_VERSION, "source": raw.sha256, "options": options}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _blocks(splits: dict[str, pa.Table], num_shards: int) -> list[pa.Table]:
    """Each split cut into at most `num_shards` blocks (text, label, split, shard): block `shard` of a split
    becomes its shard of that number."""
    blocks = []
    for name, table in splits.items():
        bounds = np.linspace(0, table.num_rows, max(1, min(num_shards, table.num_rows)) + 1).astype(int)
        table = table.append_column("split", pa.array([name] * table.num_rows, pa.string()))
        for shard, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            blocks.append(table.slice(a, b - a).append_column("shard", pa.array([shard] * (b - a), pa.int32())))
    return blocks


def _summarise_block(block: pa.Table, strip_br: bool) -> pa.Table:
    """One row per block: its split, token counts and review lengths (small, unlike the tokens)."""
    tokens = normalise(block["text"], strip_br)
    counts = pc.value_counts(pc.list_flatten(tokens))
    one_list = lambda values: pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
    return pa.table({"split": [block["split"][0].as_py()], "tokens": one_list(counts.field("values")),
                     "counts": one_list(counts.field("counts")), "lengths": one_list(pc.list_value_length(tokens))})


def _collect(dataset: ray.data.Dataset) -> pa.Table:
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def _token_counts(summaries: pa.Table, split: str) -> pa.Table:
    """token, count over the blocks of one split (each block counted in a Ray task, summed here)."""
    rows = summaries.filter(pc.equal(summaries["split"], split))
    exploded = pa.table({"token": pc.list_flatten(rows["tokens"]), "count": pc.list_flatten(rows["counts"])})
    return exploded.group_by("token").aggregate([("count", "sum")]).rename_columns(["token", "count"])


def count_vocabulary(summaries: pa.Table, size: int) -> pa.Array:
    """The `size` most frequent train tokens, ties broken by token (ascending)."""
    counts = _token_counts(summaries, "train")
    order = pc.sort_indices(counts, [("count", "descending"), ("token", "ascending")])
    return counts["token"].take(order[:size]).combine_chunks()


def _write_shards(reviews: ray.data.Dataset, vocab: pa.Array, cfg: PrepareConfig, folder: Storage) -> dict[str, dict]:
    """Encode every block and write it as `<split>/<split>-NNNNN.parquet` in `folder`, in Ray tasks: on any node
    for a bucket, on this node for a local folder. Returns each split's files: rows, bytes and SHA-256."""
    where = on_this_node(cpus=1) if folder.is_local else {}
    written = reviews.map_batches(_write_block, batch_format="pyarrow", batch_size=None, **where,
                                  fn_kwargs={"vocab": vocab, "max_len": cfg.max_len, "strip_br": cfg.strip_br,
                                             "root": folder.root})
    files = {name: {} for name in SPLITS}
    for shard in sorted(_collect(written).to_pylist(), key=lambda shard: shard["name"]):  # in the order cut
        files[shard["split"]][shard["name"]] = {k: shard[k] for k in ("rows", "bytes", "sha256")}
    return files


def _write_block(block: pa.Table, vocab: pa.Array, max_len: int, strip_br: bool, root: str) -> pa.Table:
    """A write task: one block encoded and written whole as its shard; one row describing it."""
    columns = encode(normalise(block["text"], strip_br), vocab, max_len)
    ids = pa.FixedSizeListArray.from_arrays(pa.array(columns["ids"].ravel()), max_len)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"ids": ids, "length": columns["length"], "label": block["label"]}), sink)
    data = sink.getvalue().to_pybytes()  # hashed as written: nothing is read back
    split, shard = block["split"][0].as_py(), block["shard"][0].as_py()
    name = f"{split}/{split}-{shard:05d}.parquet"
    Storage(root, option="--out").write(data, name)
    return pa.table({"split": [split], "name": [name], "rows": [block.num_rows], "bytes": [len(data)],
                     "sha256": [hashlib.sha256(data).hexdigest()]})


def _split_stats(table: pa.Table, summaries: pa.Table, vocab: pa.Array, split: str, max_len: int) -> dict:
    """Counts, label balance, lengths, truncation and the share of tokens outside the vocabulary."""
    labels = table["label"].to_numpy()
    rows = summaries.filter(pc.equal(summaries["split"], split))
    lengths = pc.list_flatten(rows["lengths"]).to_numpy()
    counts = _token_counts(summaries, split)
    tokens = int(pc.sum(counts["count"]).as_py() or 0)
    in_vocab = int(pc.sum(counts.filter(pc.is_in(counts["token"], vocab))["count"]).as_py() or 0)
    has = len(lengths) > 0
    return {
        "reviews": len(labels),
        "positive": int(labels.sum()),
        "negative": int(len(labels) - labels.sum()),
        "tokens": tokens,
        "oov_share": round((tokens - in_vocab) / max(tokens, 1), 4),
        "mean_length": round(float(lengths.mean()), 1) if has else 0.0,
        "median_length": float(np.median(lengths)) if has else 0.0,
        "truncated_share": round(float((lengths > max_len).mean()), 4) if has else 0.0,
        "empty_reviews": int((lengths == 0).sum()),
    }


def _manifest(raw: RawReviews, cfg: PrepareConfig, fingerprint: str, stats: dict, vocab_json: bytes,
              seconds: float) -> dict:
    return {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "source": {"path": cfg.source, "kind": raw.kind, "sha256": raw.sha256,
                   "decode_errors": len(raw.decode_errors), "decode_error_files": raw.decode_errors[:20]},
        "options": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"},
        "splits": stats,
        "vocab": {"size": len(json.loads(vocab_json)), "sha256": hashlib.sha256(vocab_json).hexdigest()},
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(seconds, 1),
    }


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("rnn-models", "ray", "pyarrow", "numpy", "datasets", "torch"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def summary(manifest: dict) -> str:
    """The end-of-prepare report: counts, label balance, lengths, truncation and out-of-vocabulary share."""
    lines = [f"{'split':<6} {'reviews':>8} {'positive':>9} {'mean len':>9} {'median':>7} {'truncated':>10} {'OOV':>6}"]
    for name, s in manifest["splits"].items():
        positive = s["positive"] / max(s["reviews"], 1)
        lines.append(f"{name:<6} {s['reviews']:>8} {positive:>9.1%} {s['mean_length']:>9.1f} "
                     f"{s['median_length']:>7.0f} {s['truncated_share']:>10.1%} {s['oov_share']:>6.1%}")
    source = manifest["source"]
    if source["decode_errors"]:
        lines.append(f"{source['decode_errors']} file(s) had non-UTF-8 bytes (decoded with U+FFFD)")
    lines.append(f"vocabulary: {manifest['vocab']['size']} tokens; prepared in {manifest['seconds']} s")
    return "\n".join(lines)
