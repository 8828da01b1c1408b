"""`rnn-models prepare`: raw reviews → tokenized parquet shards, in Ray tasks on the nodes.

    scan (the driver, before Ray starts: every row checked, counted and sampled, one batch held at a time)
      → read: a task per source piece reads it and cuts its reviews into ranges of the canonical order
        (split, text, label) at boundaries taken from the scan's sample
      → sort: a task per range sorts it; only each review's split and label come back to the driver, which
        draws the splits from them (`split_rows`, the same seeded draws as on one table) and gives every review
        its shard and its place in the shard
      → scatter: a task per range tokenises its reviews, counts the tokens and lengths of each split and cuts
        the reviews into one piece per shard; a count task merges the counts into the vocabulary and statistics
      → write: a task per shard puts its pieces in order, encodes them and writes the shard straight to the
        output, reporting its rows, bytes and SHA-256; the driver writes vocab.json, then manifest.json.

The reviews' text never reaches the driver's memory beyond one scanned batch: it keeps 10 bytes per review
(split, label, shard, place), so its memory stays flat as the corpus grows. The stages are plain Ray tasks,
not Ray Data's sort, zip and groupby: the shards must be byte-identical on every cluster, and Ray Data's zip
(deprecated) does not promise an order; on IMDB here those three took 38 s, this whole prepare 14 to 20 s.

Sources live on this node's disk, so their read tasks run here, as many at once as the node has CPUs. A
local `--out` is built in a temporary directory that replaces it only once complete, by write tasks on this
node (the only one that sees it). A URI `--out` (`s3://…`) is written in place by tasks on any node, its old
manifest deleted first and the new one written last: never a manifest beside shards it does not describe.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import signal
import threading
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from rnn_models.cluster import connect, node_resources, on_this_node
from rnn_models.config import PrepareConfig
from rnn_models.data.prepared import FORMAT_VERSION, SPLITS, PreparedData, open_prepared
from rnn_models.data.sources import SORT_KEYS, Piece, Scan, Source, open_source, read_piece, scan, split_codes
from rnn_models.data.splits import split_rows
from rnn_models.data.text import encode, normalise
from rnn_models.errors import UserError
from rnn_models.files import atomic_directory
from rnn_models.stalls import StallWatch
from rnn_models.storage import Storage, is_uri

log = logging.getLogger(__name__)

RANGE_BYTES = 32 << 20  # text per range of the canonical order, sorted by one task
MAX_RANGES = 256


def default_data_dir(prepare_values: dict) -> str:
    """data/prepared-k<vocab>-t<max len>[-nobr][-n<reviews>][-v<val>][-s<seed>]: one folder per way of
    preparing (defaults left out of the name), so that presets and seeds never overwrite each other's data."""
    cfg, default = PrepareConfig(**prepare_values), PrepareConfig()
    name = f"data/prepared-k{cfg.vocab_size}-t{cfg.max_len}" + ("-nobr" if cfg.strip_br else "")
    name += f"-n{cfg.max_reviews_per_split}" if cfg.max_reviews_per_split else ""
    name += f"-v{cfg.val_size}" if cfg.val_size != default.val_size else ""
    return name + (f"-s{cfg.seed}" if cfg.seed != default.seed else "")


def prepare(
    cfg: PrepareConfig, force: bool = False, address: str | None = None, schedule_timeout: float = 120
) -> PreparedData:
    """Prepare `cfg.source` into `cfg.out` (a path or URI), or reuse `cfg.out` if it already holds exactly that.

    Ray (the cluster at `address`, see `connect`) is only started when there is work to do, and only once every
    review has been checked. A task that waits `schedule_timeout` s for resources no node frees stops it with
    an error (0: wait forever).
    """
    started = time.perf_counter()
    log.info("reading %s", cfg.source)
    source = open_source(cfg.source)
    fingerprint = _fingerprint(source, cfg)
    held = None if force else _held(cfg.out, fingerprint)
    if held:
        log.info(
            "%s already holds this data (fingerprint %s): reusing it; --force rebuilds",
            cfg.out,
            fingerprint[:12],
        )
        return held
    scanned = scan(source)
    split_rows(
        scanned.codes, scanned.labels, cfg
    )  # its errors (a split too small) depend on the counts alone
    log.info(
        "checked %d reviews (%.0f MB of text) in %d piece(s) of the source",
        len(scanned.labels),
        scanned.text_bytes / 2**20,
        len(source.pieces),
    )
    connect(address)
    with _stops_when_stalled(schedule_timeout), _output(cfg.out) as folder:
        vocab, stats = _build(source, scanned, cfg, folder)
        vocab_json = (json.dumps(vocab.to_pylist(), ensure_ascii=False) + "\n").encode()
        folder.write(vocab_json, "vocab.json")
        manifest = _manifest(
            source, scanned, cfg, fingerprint, stats, vocab_json, time.perf_counter() - started
        )
        folder.write(
            json.dumps(manifest, indent=2).encode() + b"\n", "manifest.json"
        )  # last: the folder is whole
    log.info("%s", summary(manifest))
    return open_prepared(cfg.out)


def _build(source: Source, scanned: Scan, cfg: PrepareConfig, folder: Storage) -> tuple[pa.Array, dict]:
    """The Ray stages (the module's docstring): the shards written into `folder`; returns the vocabulary and each
    split's statistics and files."""
    ranges = _sorted_ranges(source, scanned)
    codes, labels = (_get([r[i] for r in ranges]) for i in (1, 2))
    sizes = [len(c) for c in codes]
    codes, labels = np.concatenate(codes), np.concatenate(labels)
    if _tally(codes, labels) != _tally(scanned.codes, scanned.labels):
        raise UserError(
            f"--source {cfg.source}: changed while it was being prepared (its reviews per split and "
            "label differ from those checked at the start); prepare again"
        )
    rows = split_rows(codes, labels, cfg)  # the splits one table in this order would get
    shard_of, place, shards = _places(rows, len(labels), cfg.num_shards)
    log.info("tokenising and counting %d reviews", sum(len(r) for r in rows.values()))
    summaries, pieces = _scatter([r[0] for r in ranges], sizes, shard_of, place, shards, cfg.strip_br)
    del ranges  # the sorted text: held now only by the scatter tasks, freed as each ends
    vocab, token_stats = _get(_count.options(num_returns=2).remote(cfg.vocab_size, cfg.max_len, *summaries))
    log.info("encoding and writing %d shards", len(shards))
    files = _write_shards(pieces, shards, vocab, cfg.max_len, folder)
    return vocab, {
        name: {**_label_stats(labels[rows[name]]), **token_stats[name], "files": files[name]}
        for name in SPLITS
    }


def _tally(codes: np.ndarray, labels: np.ndarray) -> list[int]:
    """Reviews per (split code, label)."""
    return np.bincount((codes.astype(np.int64) + 1) * 2 + labels, minlength=6).tolist()


@contextlib.contextmanager
def _stops_when_stalled(bound: float):
    """No silent hang: the work stops (as Ctrl-C, so the output is left as it was) with an error once a task has
    waited `bound` s for resources that no node frees.

    Ctrl-C (and the watch's SIGINT) raises KeyboardInterrupt here whatever handler is installed: a Tune run
    earlier in the process leaves one behind that swallows the next SIGINT (it restores the previous handler
    only when a SIGINT comes)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler) if main else None
    try:
        with StallWatch(bound) as stalls:
            try:
                yield
            except KeyboardInterrupt:
                if stalls.reason:
                    raise UserError(f"{stalls.reason}. Free or add resources, then prepare again") from None
                raise
    finally:
        if main and previous is not None:  # None: a handler installed outside Python, not ours to restore
            signal.signal(signal.SIGINT, previous)


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


def _fingerprint(source: Source, cfg: PrepareConfig) -> str:
    options = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("source", "out")}
    key = json.dumps({"format": FORMAT_VERSION, "source": source.sha256, "options": options}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def _on_this_node_in_turn(function, calls: list[tuple], **options) -> list:
    """`function` (a Ray remote function) run on this node on each of `calls`' arguments, at most as many at once
    as the node has CPUs (one on a head of none), asking for no CPU: Ray reports no demand for a task pinned to a
    node, so one waiting for CPUs that other work holds would wait forever unseen (`StallWatch` sees the
    rest). Returns each call's refs."""
    here = ray.get_runtime_context().get_node_id()
    function = function.options(**on_this_node(cpus=0), **options)
    width, started, running = max(1, int(node_resources(here).get("CPU", 0))), [], []
    for args in calls:
        if len(running) >= width:
            _, running = ray.wait(running, num_returns=1)
        started.append(function.remote(*args))
        running.append(started[-1][0] if isinstance(started[-1], list) else started[-1])
    return started


def _get(refs):
    """ray.get, with a task's UserError (a source that became unreadable since the scan) raised as itself."""
    try:
        return ray.get(refs)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, UserError):
            raise e.cause from None
        raise


# -- Sorting: ranges of the canonical order ------------------------------------------------------------------


def _key(table: pa.Table, row: int) -> tuple:
    """A review's place in the canonical order, as Python compares it (as Arrow sorts: strings by code point,
    a missing split first as all are missing together)."""
    return tuple(
        table[column][row].as_py() or "" if column == "split" else table[column][row].as_py()
        for column, _ in SORT_KEYS
    )


def _boundaries(sample: pa.Table, ranges: int) -> list[tuple]:
    """The keys that cut the canonical order into `ranges` ranges of about equal size, from a sample."""
    ordered = sample.take(pc.sort_indices(sample, SORT_KEYS))
    cuts = {_key(ordered, round(i * ordered.num_rows / ranges)) for i in range(1, ranges)}
    return sorted(cuts)


def _cut(table: pa.Table, keys: list[tuple]) -> list[pa.Table]:
    """`table` sorted and cut at `keys`: range i holds the reviews from keys[i-1] (included) to keys[i]."""
    table = table.take(pc.sort_indices(table, SORT_KEYS))
    bounds = [0] + [_bisect(table, key) for key in keys] + [table.num_rows]
    return [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _bisect(table: pa.Table, key: tuple) -> int:
    lo, hi = 0, table.num_rows
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if _key(table, mid) < key else (lo, mid)
    return lo


def _sorted_ranges(source: Source, scanned: Scan) -> list[list]:
    """Per range of the canonical order: [its reviews sorted, their split codes, their labels] (refs)."""
    count = max(1, min(MAX_RANGES, math.ceil(scanned.text_bytes / RANGE_BYTES), scanned.sample.num_rows))
    keys = _boundaries(scanned.sample, count)
    count = len(keys) + 1
    log.info(
        "reading %d piece(s) of the source into %d range(s) of the canonical order", len(source.pieces), count
    )
    calls = [(piece, keys) for piece in source.pieces]
    hub = {
        k: v for k, v in os.environ.items() if k.startswith("HF_")
    }  # the hub's cache, endpoint, offline mode
    parts = _on_this_node_in_turn(
        _read_range_parts,
        calls,
        num_returns=count,  # the source is on this disk
        **({"runtime_env": {"env_vars": hub}} if hub else {}),
    )
    parts = [[p] for p in parts] if count == 1 else parts
    return [_sort_range.remote(*(p[i] for p in parts)) for i in range(count)]


@ray.remote
def _read_range_parts(piece: Piece, keys: list[tuple]) -> list[pa.Table] | pa.Table:
    """A read task: one piece of the source, cut into the ranges."""
    tables = list(read_piece(piece))
    parts = _cut(pa.concat_tables(tables) if tables else _EMPTY, keys)
    return parts if len(parts) > 1 else parts[0]


@ray.remote(num_returns=3)
def _sort_range(*parts: pa.Table) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """A sort task: one range's parts merged and sorted; its reviews' split codes and labels, for the driver."""
    table = pa.concat_tables(parts)
    table = table.take(pc.sort_indices(table, SORT_KEYS)).combine_chunks()
    return table, split_codes(table["split"]), table["label"].to_numpy()


_EMPTY = pa.table(
    {"text": pa.array([], pa.string()), "label": pa.array([], pa.int8()), "split": pa.array([], pa.string())}
)


# -- Shards: each review's shard and place ----------------------------------------------------------------


def _places(rows: dict[str, np.ndarray], total: int, num_shards: int) -> tuple[np.ndarray, np.ndarray, list]:
    """For each review in the canonical order: its shard (numbered over all splits; -1 where no split keeps it)
    and its place in the shard; and each shard's (split, file name). A split is cut into at most `num_shards`
    shards of consecutive reviews of its shuffled order."""
    shard_of, place, shards = np.full(total, -1, np.int32), np.zeros(total, np.int32), []
    for name in SPLITS:
        indices = rows[name]
        bounds = np.linspace(0, len(indices), max(1, min(num_shards, len(indices))) + 1).astype(int)
        order = np.arange(len(indices))
        shard = np.searchsorted(bounds, order, side="right") - 1
        shard_of[indices], place[indices] = len(shards) + shard, order - bounds[shard]
        shards += [(name, f"{name}/{name}-{s:05d}.parquet") for s in range(len(bounds) - 1)]
    return shard_of, place, shards


def _scatter(
    blocks: list, sizes: list[int], shard_of: np.ndarray, place: np.ndarray, shards: list, strip_br: bool
) -> tuple[pa.Table, list[list]]:
    """Tokenise every range in a task of its own: the token counts of each split in each range and, per shard,
    its pieces (refs)."""
    offsets = np.cumsum([0, *sizes])
    splits = [split for split, _ in shards]
    tasks = [
        _scatter_range.options(num_returns=len(shards) + 1).remote(
            block, int(a), shard_of[a:b], place[a:b], splits, strip_br
        )
        for block, a, b in zip(blocks, offsets[:-1], offsets[1:])
    ]
    return [t[0] for t in tasks], [[t[1 + s] for t in tasks] for s in range(len(shards))]


@ray.remote
def _scatter_range(
    block: pa.Table, offset: int, shard_of: np.ndarray, place: np.ndarray, splits: list[str], strip_br: bool
):
    """A scatter task: one sorted range (its first review `offset`-th in the canonical order) tokenised; its
    counts per split, then one piece per shard (tokens, label, place, the review's canonical position)."""
    kept = np.flatnonzero(shard_of >= 0)
    tokens = normalise(block["text"].take(kept), strip_br)
    shard_of = shard_of[kept]
    split = np.asarray(splits)[shard_of]
    summaries = pa.concat_tables(
        [_summarise(tokens.filter(pa.array(split == name)), name) for name in SPLITS]
    )
    order = np.argsort(shard_of, kind="stable")
    bounds = np.searchsorted(shard_of[order], np.arange(len(splits) + 1))
    rows = pa.table(
        {"tokens": tokens, "label": block["label"].take(kept), "place": place[kept], "review": offset + kept}
    ).take(order)
    return summaries, *(rows.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:]))


def _summarise(tokens: pa.ListArray, split: str) -> pa.Table:
    """One row: a split's token counts and review lengths in one range (small, unlike the tokens)."""
    counts = pc.value_counts(pc.list_flatten(tokens))
    one_list = lambda values: pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
    return pa.table(
        {
            "split": [split],
            "tokens": one_list(counts.field("values")),
            "counts": one_list(counts.field("counts")),
            "lengths": one_list(pc.list_value_length(tokens)),
        }
    )


def _token_counts(summaries: pa.Table, split: str) -> pa.Table:
    """token, count over the ranges of one split (each counted in a Ray task, summed here)."""
    rows = summaries.filter(pc.equal(summaries["split"], split))
    exploded = pa.table({"token": pc.list_flatten(rows["tokens"]), "count": pc.list_flatten(rows["counts"])})
    return exploded.group_by("token").aggregate([("count", "sum")]).rename_columns(["token", "count"])


def count_vocabulary(summaries: pa.Table, size: int) -> pa.Array:
    """The `size` most frequent train tokens, ties broken by token (ascending)."""
    counts = _token_counts(summaries, "train")
    order = pc.sort_indices(counts, [("count", "descending"), ("token", "ascending")])
    return counts["token"].take(order[:size]).combine_chunks()


def _write_shards(
    pieces: list[list], shards: list, vocab: pa.Array, max_len: int, folder: Storage
) -> dict[str, dict]:
    """Encode and write every shard in a task of its own: on any node for a bucket, on this node for a local
    folder. Returns each split's files: rows, bytes and SHA-256."""
    vocab = ray.put(vocab)
    tasks = [(name, vocab, max_len, folder.root, *parts) for (_, name), parts in zip(shards, pieces)]
    written = _get(
        _on_this_node_in_turn(_write_shard, tasks)
        if folder.is_local
        else [_write_shard.remote(*args) for args in tasks]
    )
    files = {name: {} for name in SPLITS}
    for (split, name), shard in zip(shards, written):
        files[split][name] = shard
    return files


@ray.remote
def _write_shard(name: str, vocab: pa.Array, max_len: int, root: str, *pieces: pa.Table) -> dict:
    """A write task: a shard's pieces in their order, encoded and written whole; what was written."""
    rows = pa.concat_tables(pieces)
    rows = rows.take(pc.sort_indices(rows["place"])).combine_chunks()
    columns = encode(rows["tokens"], vocab, max_len)
    ids = pa.FixedSizeListArray.from_arrays(pa.array(columns["ids"].ravel()), max_len)
    table = {"ids": ids, "length": columns["length"], "label": rows["label"]}
    if name.startswith("test/"):  # the key by which runs' predictions on the same test reviews are paired
        table["review"] = rows["review"].cast(pa.int64())
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(table), sink)
    data = sink.getvalue().to_pybytes()  # hashed as written: nothing is read back
    Storage(root, option="--out").write(data, name)
    return {"rows": rows.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@ray.remote
def _count(size: int, max_len: int, *summaries: pa.Table) -> tuple[pa.Array, dict]:
    """A count task: the ranges' counts merged (in a task: they grow with the corpus, unlike what the driver
    keeps) into the vocabulary and each split's token statistics."""
    summaries = pa.concat_tables(summaries)
    vocab = count_vocabulary(summaries, size)
    return vocab, {name: _token_stats(summaries, vocab, name, max_len) for name in SPLITS}


def _label_stats(labels: np.ndarray) -> dict:
    return {
        "reviews": len(labels),
        "positive": int(labels.sum()),
        "negative": int(len(labels) - labels.sum()),
    }


def _token_stats(summaries: pa.Table, vocab: pa.Array, split: str, max_len: int) -> dict:
    """Tokens, the share outside the vocabulary, lengths, truncation and empty reviews."""
    rows = summaries.filter(pc.equal(summaries["split"], split))
    lengths = pc.list_flatten(rows["lengths"]).to_numpy()
    counts = _token_counts(summaries, split)
    tokens = int(pc.sum(counts["count"]).as_py() or 0)
    in_vocab = int(pc.sum(counts.filter(pc.is_in(counts["token"], vocab))["count"]).as_py() or 0)
    has = len(lengths) > 0
    return {
        "tokens": tokens,
        "oov_share": round((tokens - in_vocab) / max(tokens, 1), 4),
        "mean_length": round(float(lengths.mean()), 1) if has else 0.0,
        "median_length": float(np.median(lengths)) if has else 0.0,
        "truncated_share": round(float((lengths > max_len).mean()), 4) if has else 0.0,
        "empty_reviews": int((lengths == 0).sum()),
    }


def _manifest(
    source: Source,
    scanned: Scan,
    cfg: PrepareConfig,
    fingerprint: str,
    stats: dict,
    vocab_json: bytes,
    seconds: float,
) -> dict:
    return {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "source": {
            "path": cfg.source,
            "kind": source.kind,
            "sha256": source.sha256,
            "decode_errors": len(scanned.decode_errors),
            "decode_error_files": scanned.decode_errors[:20],
        },
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
    lines = [
        f"{'split':<6} {'reviews':>8} {'positive':>9} {'mean len':>9} {'median':>7} {'truncated':>10} {'OOV':>6}"
    ]
    for name, s in manifest["splits"].items():
        positive = s["positive"] / max(s["reviews"], 1)
        lines.append(
            f"{name:<6} {s['reviews']:>8} {positive:>9.1%} {s['mean_length']:>9.1f} "
            f"{s['median_length']:>7.0f} {s['truncated_share']:>10.1%} {s['oov_share']:>6.1%}"
        )
    source = manifest["source"]
    if source["decode_errors"]:
        lines.append(f"{source['decode_errors']} file(s) had non-UTF-8 bytes (decoded with U+FFFD)")
    lines.append(f"vocabulary: {manifest['vocab']['size']} tokens; prepared in {manifest['seconds']} s")
    return "\n".join(lines)
