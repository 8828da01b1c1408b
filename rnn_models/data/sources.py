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

from rnn_models.errors import UserError, reason
from rnn_models.files import sha256_file

SOURCE_SPLITS = ("train", "test")  # a source's own splits; prepare adds val
FORMATS = ("hf:<dataset> (Hugging Face hub), a Hugging Face parquet directory (<config>/train-*.parquet, "
           "<config>/test-*.parquet), an aclImdb directory, aclImdb_v1.tar.gz, or a .csv file")
CSV_BLOCK = 64 << 20  # bytes pyarrow parses at once: a review (a CSV row) may be up to this long
ACLIMDB_FILE = re.compile(r"(?:^|/)(train|test)/(pos|neg)/[^/]+\.txt$")


@dataclass
class RawReviews:
    table: pa.Table  # text: string, label: int8, split: string (null where the source has no split)
    kind: str  # which reader read it
    sha256: str  # digest of everything read, for the prepared data's fingerprint
    decode_errors: list[str] = field(default_factory=list)  # files with non-UTF-8 bytes (decoded with U+FFFD)


def load_reviews(source: str) -> RawReviews:
    """Read every review of `source` (see the module docstring for what it may be)."""
    raw = _read(source)
    if raw.table.num_rows == 0:
        raise UserError(f"--source {source}: no reviews in it")
    return raw


def _read(source: str) -> RawReviews:
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


def _row_index(row: int) -> str:
    return f"row index {row}"  # parquet and the hub have no lines; pyarrow and pandas count rows from 0


def checked(table: pa.Table, where: str, split: str | None, at=_row_index) -> pa.Table:
    """`table` reduced to text and label, with both checked; `where` names the file in errors, `at(row)`
    the row."""
    missing = {"text", "label"} - set(table.column_names)
    if missing:
        raise UserError(f"{where}: missing column(s) {', '.join(sorted(missing))} "
                        f"(found {', '.join(table.column_names)}); expected columns text and label")
    text, label = table["text"], table["label"]
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        raise UserError(f"{where}: column text has type {text.type}, expected strings")
    if (row := _first_false(pc.is_valid(text))) is not None:
        raise UserError(f"{where}, {at(row)}: text is missing")
    if not pa.types.is_integer(label.type):
        raise UserError(f"{where}: column label has type {label.type}, expected integers 0 and 1")
    if (row := _first_false(pc.is_in(label, pa.array([0, 1], label.type)))) is not None:
        value = label[row].as_py()
        raise UserError(f"{where}, {at(row)}: " + ("label is missing" if value is None else
                                                    f"label {value} is not 0 (negative) or 1 (positive)"))
    split_column = pa.array([split] * len(table), pa.string())
    return pa.table({"text": text.cast(pa.string()), "label": label.cast(pa.int8()), "split": split_column})


def _first_false(mask) -> int | None:
    """The first row where `mask` is false or null, or None."""
    bad = np.flatnonzero(~pc.fill_null(mask, False).to_numpy(zero_copy_only=False))
    return int(bad[0]) if len(bad) else None


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
                raise UserError(f"{path}: not a readable parquet file ({reason(e)})") from e
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
        raise UserError(f"{path}: not a readable .tar.gz archive ({reason(e)})") from e
    if not rows:
        raise UserError(f"{path}: no reviews found (expected members like aclImdb/train/pos/0_9.txt)")
    return RawReviews(_rows_to_table(rows), "aclimdb-tarball", _hash_files([path], path.parent), decode_errors)


def _rows_to_table(rows: list[tuple[str, int, str]]) -> pa.Table:
    text, label, split = zip(*rows) if rows else ((), (), ())
    return pa.table({"text": pa.array(text, pa.string()), "label": pa.array(label, pa.int8()),
                     "split": pa.array(split, pa.string())})


def _from_csv(path: Path) -> RawReviews:
    strings = {c: pa.string() for c in ("review", "text", "sentiment", "split")}  # whatever the cells hold
    try:
        table = pyarrow.csv.read_csv(path, read_options=pyarrow.csv.ReadOptions(block_size=CSV_BLOCK),
                                     convert_options=pyarrow.csv.ConvertOptions(column_types=strings))
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable CSV file ({reason(e)})") from e
    if table.num_rows == 0:
        raise UserError(f"{path}: no reviews in it (only a header: {', '.join(table.column_names)})")
    columns, original, at = set(table.column_names), table, lambda row: f"line {_csv_line(path, row)}"
    if {"review", "sentiment"} <= columns:
        sentiment = pc.utf8_lower(pc.utf8_trim_whitespace(table["sentiment"]))
        if (row := _first_false(pc.is_in(sentiment, pa.array(["negative", "positive"])))) is not None:
            raise UserError(f"{path}, {at(row)}: sentiment {table['sentiment'][row].as_py()!r} is not "
                            "'positive' or 'negative'")
        table = pa.table({"text": table["review"], "label": pc.equal(sentiment, "positive").cast(pa.int8())})
    elif not {"text", "label"} <= columns:
        raise UserError(f"{path}: expected columns review,sentiment or text,label (found {', '.join(table.column_names)})")
    reviews = checked(table, str(path), None, at)
    if "split" in columns:
        reviews = reviews.set_column(2, "split", _csv_split(original["split"], path, at))
    return RawReviews(reviews, "csv", _hash_files([path], path.parent))


def _csv_split(split: pa.ChunkedArray, path: Path, at) -> pa.ChunkedArray:
    split = pc.utf8_lower(pc.utf8_trim_whitespace(split))
    if (row := _first_false(pc.is_in(split, pa.array(SOURCE_SPLITS)))) is not None:
        raise UserError(f"{path}, {at(row)}: split {split[row].as_py()!r} is not 'train' or 'test'")
    return split


def _csv_line(path: Path, row: int) -> int:
    """The line of `path` where data row `row` starts, the header being line 1, as an editor counts: a
    quoted review may span lines, and blank lines (which pyarrow skips) count too. Only run for an error."""
    record, quoted, number = -1, False, 0  # record -1: the header
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not quoted and line.strip(b"\r\n"):
                if record == row:
                    return number
                record += 1
            quoted ^= line.count(b'"') % 2 == 1  # an odd number of quotes opens or closes a quoted field
    return number


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
        raise UserError(f"--source hf:{name}: could not load it ({reason(e)}). Pass a local path with --source.") from e
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
