"""Read IMDB reviews from any supported source into one table: `text`, `label` (0/1), `split` (train/test).

Sources: `hf:<name>` (Hugging Face hub), a directory in the Hugging Face parquet layout, the original
`aclImdb` directory or `aclImdb_v1.tar.gz` (read in place, never extracted), or a CSV. Every reader checks
what it reads and raises a `UserError` that names the file and row. The table is small (IMDB's 50k reviews
are ~65 MB of text), so it is read on the driver; the heavy work (tokenising, counting, encoding) is Ray's.
"""

import gzip
import hashlib
import os
import re
import socket
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq

from rnn_models.errors import UserError
from rnn_models.files import sha256_file

SOURCE_SPLITS = ("train", "test")  # a source's own splits; prepare adds val
FORMATS = ("hf:<dataset> (Hugging Face hub), a Hugging Face parquet directory (<config>/train-*.parquet, "
           "<config>/test-*.parquet), an aclImdb directory, aclImdb_v1.tar.gz, or a .csv file")
ACLIMDB_FILE = re.compile(r"(?:^|/)(train|test)/(pos|neg)/[^/]+\.txt$")


@dataclass
class RawReviews:
    table: pa.Table  # text: string, label: int8, split: string (null where the source has no split)
    kind: str  # which reader read it
    sha256: str  # digest of everything read, for the prepared data's fingerprint
    decode_errors: list[str] = field(default_factory=list)  # files with non-UTF-8 bytes (decoded with U+FFFD)


def load_reviews(source: str) -> RawReviews:
    """Read every review of `source` (see the module docstring for what it may be)."""
    if source.startswith("hf:"):
        return _from_hub(source[3:])
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"--source {source}: no such file or directory. Expected {FORMATS}.")
    if not os.access(path, os.R_OK):
        raise UserError(f"--source {source}: permission denied")
    if path.is_dir():
        aclimdb = _find_aclimdb(path)
        return _from_aclimdb_dir(aclimdb) if aclimdb else _from_parquet_dir(path)
    if path.name.endswith((".tar.gz", ".tgz")):
        return _from_tarball(path)
    if path.suffix == ".csv":
        return _from_csv(path)
    raise UserError(f"--source {source}: unsupported file. Expected {FORMATS}.")


def checked(table: pa.Table, where: str, split: str | None) -> pa.Table:
    """`table` reduced to text and label, with both checked; `where` names the file in errors."""
    missing = {"text", "label"} - set(table.column_names)
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(sorted(missing))} "
                        f"(found {', '.join(table.column_names)}); expected columns text and label")
    text, label = table["text"], table["label"]
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        raise UserError(f"{where}: column text has type {text.type}, expected strings")
    if text.null_count:
        raise UserError(f"{where}, row {_first(pc.is_null(text))}: text is missing")
    if not pa.types.is_integer(label.type):
        raise UserError(f"{where}: column label has type {label.type}, expected integers 0 and 1")
    valid = pc.fill_null(pc.is_in(label, pa.array([0, 1], label.type)), False)
    if not pc.all(valid).as_py():
        row = _first(pc.invert(valid))
        raise UserError(f"{where}, row {row}: label {label[row].as_py()} is not 0 (negative) or 1 (positive)")
    split_column = pa.array([split] * len(table), pa.string())
    return pa.table({"text": text.cast(pa.string()), "label": label.cast(pa.int8()), "split": split_column})


def _first(mask) -> int:
    return int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0])


def _hash_files(paths: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode())
        sha256_file(path, digest)
    return digest.hexdigest()


def _from_parquet_dir(root: Path) -> RawReviews:
    files = _parquet_layout(root)
    tables = []
    for split, paths in files.items():
        for path in paths:
            try:
                table = pq.read_table(path)
            except (pa.ArrowException, OSError) as e:
                raise UserError(f"{path}: not a readable parquet file ({e})") from e
            tables.append(checked(table, str(path), split))
    all_paths = [p for paths in files.values() for p in paths]
    return RawReviews(pa.concat_tables(tables), "hf-parquet", _hash_files(all_paths, root))


def _parquet_layout(root: Path) -> dict[str, list[Path]]:
    """train/test parquet files of `root` or of one config directory below it (`plain_text` preferred)."""
    configs = [root] + sorted(d for d in root.iterdir() if d.is_dir())
    found = [c for c in configs if all(sorted(c.glob(f"{s}-*.parquet")) for s in SOURCE_SPLITS)]
    if not found:
        raise UserError(f"--source {root}: found neither train-*.parquet and test-*.parquet (Hugging Face "
                        f"layout) nor train/pos, train/neg, test/pos, test/neg (aclImdb). Expected {FORMATS}.")
    preferred = [c for c in found if c.name == "plain_text"]
    if len(found) > 1 and not preferred:
        names = ", ".join(c.name for c in found)
        raise UserError(f"--source {root}: several configurations ({names}); pass one of them as --source")
    config = (preferred or found)[0]
    return {s: sorted(config.glob(f"{s}-*.parquet")) for s in SOURCE_SPLITS}


def _find_aclimdb(path: Path) -> Path | None:
    for root in (path, path / "aclImdb"):
        if all((root / s / p).is_dir() for s in SOURCE_SPLITS for p in ("pos", "neg")):
            return root
    return None


def _decode(data: bytes, name: str, decode_errors: list[str]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        decode_errors.append(name)
        return data.decode("utf-8", errors="replace")


def _from_aclimdb_dir(root: Path) -> RawReviews:
    rows, paths, decode_errors = [], [], []
    for split in SOURCE_SPLITS:
        for label, folder in ((0, "neg"), (1, "pos")):
            for path in sorted((root / split / folder).glob("*.txt")):
                rows.append((_decode(path.read_bytes(), str(path), decode_errors), label, split))
                paths.append(path)
    return RawReviews(_rows_to_table(rows), "aclimdb-dir", _hash_files(paths, root), decode_errors)


def _from_tarball(path: Path) -> RawReviews:
    rows, decode_errors = [], []
    try:
        # Streaming (r|) reads members in order, never extracted; gzip.open notices a truncated archive.
        with gzip.open(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                match = ACLIMDB_FILE.search(member.name)
                if member.isfile() and match:
                    data = tar.extractfile(member).read()
                    split, folder = match.groups()
                    rows.append((_decode(data, member.name, decode_errors), int(folder == "pos"), split))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise UserError(f"{path}: not a readable .tar.gz archive ({e})") from e
    if not rows:
        raise UserError(f"{path}: no reviews found (expected members like aclImdb/train/pos/0_9.txt)")
    return RawReviews(_rows_to_table(rows), "aclimdb-tarball", _hash_files([path], path.parent), decode_errors)


def _rows_to_table(rows: list[tuple[str, int, str]]) -> pa.Table:
    text, label, split = zip(*rows) if rows else ((), (), ())
    return pa.table({"text": pa.array(text, pa.string()), "label": pa.array(label, pa.int8()),
                     "split": pa.array(split, pa.string())})


def _from_csv(path: Path) -> RawReviews:
    try:
        table = pyarrow.csv.read_csv(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable CSV file ({e})") from e
    columns, original = set(table.column_names), table
    if {"review", "sentiment"} <= columns:
        sentiment = pc.utf8_lower(pc.utf8_trim_whitespace(table["sentiment"].cast(pa.string())))
        known = pc.fill_null(pc.is_in(sentiment, pa.array(["negative", "positive"])), False)
        if not pc.all(known).as_py():
            row = _first(pc.invert(known))
            raise UserError(f"{path}, row {row + 1}: sentiment {table['sentiment'][row].as_py()!r} is not "
                            "'positive' or 'negative'")
        table = pa.table({"text": table["review"], "label": pc.equal(sentiment, "positive").cast(pa.int8())})
    elif not {"text", "label"} <= columns:
        raise UserError(f"{path}: expected columns review,sentiment or text,label (found {', '.join(table.column_names)})")
    reviews = checked(table, str(path), None)
    if "split" in columns:
        reviews = reviews.set_column(2, "split", _csv_split(original["split"], path))
    return RawReviews(reviews, "csv", _hash_files([path], path.parent))


def _csv_split(split: pa.ChunkedArray, path: Path) -> pa.ChunkedArray:
    split = pc.utf8_lower(pc.utf8_trim_whitespace(split.cast(pa.string())))
    known = pc.fill_null(pc.is_in(split, pa.array(SOURCE_SPLITS)), False)
    if not pc.all(known).as_py():
        row = _first(pc.invert(known))
        raise UserError(f"{path}, row {row + 1}: split {split[row].as_py()!r} is not 'train' or 'test'")
    return split


def _from_hub(name: str) -> RawReviews:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    if not offline and not _hub_reachable():
        raise UserError(f"--source hf:{name}: the Hugging Face hub cannot be reached from this machine. "
                        "Pass a local copy instead: --source PATH (a Hugging Face parquet directory such as "
                        "../shared/data/imdb, an aclImdb directory or tarball, or a CSV).")
    import datasets  # slow to import; only the hub path needs it

    try:
        splits = datasets.load_dataset(name)
    except Exception as e:  # datasets raises many types (connection, missing file, cache miss)
        raise UserError(f"--source hf:{name}: could not load it ({e}). Pass a local path with --source.") from e
    tables = [checked(splits[s].data.table, f"hf:{name} ({s})", s) for s in SOURCE_SPLITS if s in splits]
    if len(tables) != len(SOURCE_SPLITS):
        raise UserError(f"--source hf:{name}: needs train and test splits (found {', '.join(splits)})")
    fingerprint = "".join(splits[s]._fingerprint for s in SOURCE_SPLITS)
    return RawReviews(pa.concat_tables(tables), "hf-hub", hashlib.sha256(fingerprint.encode()).hexdigest())


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
