"""`rnn-models prepare`: raw reviews → tokenized parquet shards, as Ray Data operations.

    read (driver) → split (seeded, stratified) → blocks in the object store → two passes of map_batches:
      1. normalise, count tokens and lengths per block (Ray tasks; summed on the driver) → vocabulary
      2. normalise and encode each block → write_parquet, one shard per block → vocab.json, manifest.json

Everything is written to a temporary directory that replaces `--out` only once complete (or, for a URI
`--out` such as `s3://…`, is uploaded there, manifest last).
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rnn_models.cluster import connect
from rnn_models.config import PrepareConfig
from rnn_models.data.prepared import FORMAT_VERSION, SPLITS, PreparedData, open_prepared
from rnn_models.data.sources import RawReviews, load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import encode, normalise
from rnn_models.errors import UserError
from rnn_models.files import atomic_directory, sha256_file, write_json
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
    with _output(cfg.out) as tmp:
        log.info("normalising and counting %d reviews", reviews.count())
        summaries = _collect(reviews.map_batches(_summarise_block, batch_format="pyarrow", batch_size=None,
                                                 fn_kwargs={"strip_br": cfg.strip_br}))
        vocab = count_vocabulary(summaries, cfg.vocab_size)
        log.info("encoding and writing the shards")
        files = _write_shards(reviews, vocab, cfg, tmp)
        stats = {name: {**_split_stats(splits[name], summaries, vocab, name, cfg.max_len), "files": files[name]}
                 for name in SPLITS}
        (tmp / "vocab.json").write_text(json.dumps(vocab.to_pylist(), ensure_ascii=False) + "\n")
        manifest = _manifest(raw, cfg, fingerprint, stats, tmp, time.perf_counter() - started)
        write_json(tmp / "manifest.json", manifest)
    log.info("%s", summary(manifest))
    return open_prepared(cfg.out)


@contextlib.contextmanager
def _output(out: str):
    """A local folder to build in, which then becomes `out`: renamed into place when `out` is a local path,
    uploaded when it is a URI (every node reads a bucket; the shards are built here, on the driver)."""
    if not is_uri(out):
        with atomic_directory(Path(out)) as tmp:
            yield tmp
        return
    folder = Storage(out, option="--out")
    folder.check_writable()  # before the work, not after it
    with tempfile.TemporaryDirectory(prefix="rnn-models-prepare-") as tmp:
        yield Path(tmp)
        _publish(Path(tmp), folder)


def _publish(built: Path, folder: Storage) -> None:
    """Upload a built folder. The old manifest goes first and the new one last: a reader never sees a
    manifest beside shards it does not describe (an interrupted upload leaves no manifest: prepare again)."""
    folder.delete("manifest.json")
    for name in folder.files(".parquet"):
        if name.split("/")[0] in SPLITS:
            folder.delete(name)
    for path in sorted(built.rglob("*")):
        if path.is_file() and path.name != "manifest.json":
            folder.upload(path, *path.relative_to(built).parts)
    folder.upload(built / "manifest.json", "manifest.json")
    log.info("uploaded to %s", folder.root)


def _held(out: str, fingerprint: str) -> PreparedData | None:
    """The prepared data at `out` if it is exactly this (verified against its manifest), else None."""
    try:
        data = open_prepared(out)
    except UserError:
        return None  # absent or damaged: rebuild
    return data if data.fingerprint == fingerprint else None


def _fingerprint(raw: RawReviews, cfg: PrepareConfig) -> str:
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("source", "out")}
    key = json.dumps({"format": FORMAT_VERSION, "source": raw.sha256, "options": options}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _blocks(splits: dict[str, pa.Table], num_shards: int) -> list[pa.Table]:
    """Each split cut into at most `num_shards` blocks (text, label, split): each block becomes one shard."""
    blocks = []
    for name, table in splits.items():
        bounds = np.linspace(0, table.num_rows, max(1, min(num_shards, table.num_rows)) + 1).astype(int)
        table = table.append_column("split", pa.array([name] * table.num_rows, pa.string()))
        for a, b in zip(bounds[:-1], bounds[1:]):  # `block` numbers them, to write them back in this order
            blocks.append(table.slice(a, b - a).append_column("block", pa.array([len(blocks)] * (b - a), pa.int32())))
    return blocks


def _summarise_block(block: pa.Table, strip_br: bool) -> pa.Table:
    """One row per block: its split, token counts and review lengths (small, unlike the tokens)."""
    tokens = normalise(block["text"], strip_br)
    counts = pc.value_counts(pc.list_flatten(tokens))
    one_list = lambda values: pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
    return pa.table({"split": [block["split"][0].as_py()], "tokens": one_list(counts.field("values")),
                     "counts": one_list(counts.field("counts")), "lengths": one_list(pc.list_value_length(tokens))})


def _tables(dataset: ray.data.Dataset) -> list[pa.Table]:
    return ray.get(dataset.to_arrow_refs())


def _collect(dataset: ray.data.Dataset) -> pa.Table:
    return pa.concat_tables(_tables(dataset))


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


def _write_shards(reviews: ray.data.Dataset, vocab: pa.Array, cfg: PrepareConfig, out: Path) -> dict[str, dict]:
    """Encode every review (Ray tasks, anywhere) and write `out/<split>/<split>-NNNNN.parquet` here, on the
    driver: no task opens a path of this node's disk, so any node may encode. Returns each split's files."""
    encoded = reviews.map_batches(_encode_block, batch_format="pyarrow", batch_size=None,
                                  fn_kwargs={"vocab": vocab, "max_len": cfg.max_len, "strip_br": cfg.strip_br})
    blocks = sorted((t for t in _tables(encoded) if t.num_rows), key=lambda t: t["block"][0].as_py())
    files = {name: {} for name in SPLITS}
    for block in blocks:  # in the order _blocks cut them: the same source gives the same shards
        split = block["split"][0].as_py()
        name = f"{split}/{split}-{len(files[split]):05d}.parquet"
        (out / split).mkdir(exist_ok=True)
        pq.write_table(block.drop_columns(["split", "block"]), out / name)
        files[split][name] = {"rows": block.num_rows, "sha256": sha256_file(out / name)}
    return files


def _encode_block(block: pa.Table, vocab: pa.Array, max_len: int, strip_br: bool) -> pa.Table:
    columns = encode(normalise(block["text"], strip_br), vocab, max_len)
    ids = pa.FixedSizeListArray.from_arrays(pa.array(columns["ids"].ravel()), max_len)
    return pa.table({"ids": ids, "length": columns["length"], "label": block["label"], "split": block["split"],
                     "block": block["block"]})


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
