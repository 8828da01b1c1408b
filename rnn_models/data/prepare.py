"""`rnn-models prepare`: raw reviews → tokenized parquet shards, as Ray Data operations.

    read (driver) → split (seeded, stratified) → normalise in map_batches → count train tokens (map in
    Ray tasks, reduce on the driver) → encode in map_batches → write parquet shards → vocab + manifest

Everything is written to a temporary directory that replaces `--out` only once complete.
"""

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
from ray.data.datasource import FilenameProvider

from rnn_models.cluster import connect
from rnn_models.config import PrepareConfig
from rnn_models.data.prepared import FORMAT_VERSION, SPLITS, PreparedData, open_prepared
from rnn_models.data.sources import RawReviews, load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import encode, normalise
from rnn_models.errors import UserError
from rnn_models.files import atomic_directory, sha256_file, write_json

log = logging.getLogger(__name__)


def prepare(cfg: PrepareConfig, force: bool = False, address: str | None = None) -> PreparedData:
    """Prepare `cfg.source` into `cfg.out`, or reuse `cfg.out` if it already holds exactly that.

    Ray (the cluster at `address`, see `connect`) is only started when there is work to do.
    """
    started = time.perf_counter()
    log.info("reading %s", cfg.source)
    raw = load_reviews(cfg.source)
    fingerprint = _fingerprint(raw, cfg)
    if not force and _holds(cfg.out, fingerprint):
        log.info("%s already holds this data (fingerprint %s): reusing it; --force rebuilds", cfg.out, fingerprint[:12])
        return open_prepared(cfg.out)
    splits = split_reviews(raw.table, cfg)
    connect(address)
    with atomic_directory(Path(cfg.out)) as tmp:
        log.info("normalising and counting %d train reviews", splits["train"].num_rows)
        tokens = {name: _tokenized(table, cfg) for name, table in splits.items()}
        tokens["train"] = tokens["train"].materialize()  # read twice: counted, then encoded
        vocab = count_vocabulary(tokens["train"], cfg.vocab_size)
        stats = {}
        for name in SPLITS:
            log.info("encoding and writing %s (%d reviews)", name, splits[name].num_rows)
            stats[name] = _encode_and_write(tokens[name], vocab, cfg, tmp / name)
        (tmp / "vocab.json").write_text(json.dumps(vocab.to_pylist(), ensure_ascii=False) + "\n")
        manifest = _manifest(raw, cfg, fingerprint, stats, tmp, time.perf_counter() - started)
        write_json(tmp / "manifest.json", manifest)
    log.info("%s", summary(manifest))
    return open_prepared(cfg.out)


def _holds(out: str, fingerprint: str) -> bool:
    try:
        return open_prepared(out).fingerprint == fingerprint
    except UserError:
        return False  # absent, stale or damaged: rebuild


def _fingerprint(raw: RawReviews, cfg: PrepareConfig) -> str:
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("source", "out")}
    key = json.dumps({"format": FORMAT_VERSION, "source": raw.sha256, "options": options}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _tokenized(table: pa.Table, cfg: PrepareConfig) -> ray.data.Dataset:
    """`table` (text, label) as a Dataset of (tokens, label), one block per future shard."""
    n_blocks = max(1, min(cfg.num_shards, table.num_rows))
    bounds = np.linspace(0, table.num_rows, n_blocks + 1).astype(int)
    blocks = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]
    return ray.data.from_arrow(blocks).map_batches(
        _normalise_batch, batch_format="pyarrow", batch_size=None, fn_kwargs={"strip_br": cfg.strip_br})


def _normalise_batch(batch: pa.Table, strip_br: bool) -> pa.Table:
    return pa.table({"tokens": normalise(batch["text"], strip_br), "label": batch["label"]})


def count_vocabulary(tokens: ray.data.Dataset, size: int) -> pa.Array:
    """The `size` most frequent tokens, ties broken by token (ascending): counted per block, summed here."""
    partial_counts = tokens.map_batches(_count_batch, batch_format="pyarrow", batch_size=None)
    counts = _collect(partial_counts).group_by("token").aggregate([("count", "sum")])
    order = pc.sort_indices(counts, [("count_sum", "descending"), ("token", "ascending")])
    return counts["token"].take(order[:size]).combine_chunks()


def _count_batch(batch: pa.Table) -> pa.Table:
    counts = pc.value_counts(pc.list_flatten(batch["tokens"]))
    return pa.table({"token": counts.field("values"), "count": counts.field("counts")})


def _collect(dataset: ray.data.Dataset) -> pa.Table:
    return pa.concat_tables(ray.get(dataset.to_arrow_refs()))


def _encode_and_write(tokens: ray.data.Dataset, vocab: pa.Array, cfg: PrepareConfig, out: Path) -> dict:
    encoded = tokens.map_batches(_encode_batch, batch_format="pyarrow", batch_size=None,
                                 fn_kwargs={"vocab": vocab, "max_len": cfg.max_len}).materialize()
    stats = _split_stats(_collect(encoded.select_columns(["label", "num_tokens", "num_oov"])), cfg.max_len)
    encoded.select_columns(["ids", "length", "label"]).write_parquet(
        str(out), filename_provider=_ShardNames(out.name), mode=ray.data.SaveMode.OVERWRITE)
    stats["files"] = {f"{out.name}/{p.name}": {"rows": pq.ParquetFile(p).metadata.num_rows, "sha256": sha256_file(p)}
                      for p in sorted(out.glob("*.parquet"))}
    return stats


def _encode_batch(batch: pa.Table, vocab: pa.Array, max_len: int) -> pa.Table:
    columns = encode(batch["tokens"], vocab, max_len)
    ids = pa.FixedSizeListArray.from_arrays(pa.array(columns.pop("ids").ravel()), max_len)
    return pa.table({"ids": ids, **columns, "label": batch["label"]})


class _ShardNames(FilenameProvider):
    def __init__(self, split: str):
        self.split = split

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        return f"{self.split}-{task_index:05d}.parquet"


def _split_stats(table: pa.Table, max_len: int) -> dict:
    labels, lengths, oov = (table[c].to_numpy() for c in ("label", "num_tokens", "num_oov"))
    tokens = int(lengths.sum())
    return {
        "reviews": len(labels),
        "positive": int(labels.sum()),
        "negative": int(len(labels) - labels.sum()),
        "tokens": tokens,
        "oov_share": round(float(oov.sum()) / max(tokens, 1), 4),
        "mean_length": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
        "median_length": float(np.median(lengths)) if len(lengths) else 0.0,
        "truncated_share": round(float((lengths > max_len).mean()), 4) if len(lengths) else 0.0,
        "empty_reviews": int((lengths == 0).sum()),
    }


def _manifest(raw: RawReviews, cfg: PrepareConfig, fingerprint: str, stats: dict, root: Path, seconds: float) -> dict:
    vocab_path = root / "vocab.json"
    return {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "source": {"path": cfg.source, "kind": raw.kind, "sha256": raw.sha256,
                   "decode_errors": len(raw.decode_errors), "decode_error_files": raw.decode_errors[:20]},
        "options": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "out"},
        "splits": stats,
        "vocab": {"size": len(json.loads(vocab_path.read_text())), "sha256": sha256_file(vocab_path)},
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
