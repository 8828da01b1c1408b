"""Read IMDB reviews from any supported source: tables of `text`, `label` (0/1), `split` (train/test).

Sources: `hf:<name>` (Hugging Face hub), a directory in the Hugging Face parquet layout, the original
`aclImdb` directory or `aclImdb_v1.tar.gz` (read in place, never extracted), or a CSV. Every reader checks
what it reads and raises a `UserError` that names the file and row.

A source is cut into pieces (a parquet file's row groups, a few thousand files of an aclImdb folder, a whole
tarball, CSV or hub split), each read as a stream of checked tables of at most `BATCH_ROWS` reviews, so that
memory stays bounded however large the source. `prepare`'s driver scans every piece once (`scan`: every row
checked before Ray starts, counted and sampled, one batch held at a time); Ray tasks then read the pieces
again on the nodes to do the work. `load_reviews` reads a whole source into one table, for work that needs it
in one process (the linear baselines, the benchmark).
"""

import csv
import gzip
import hashlib
import os
import re
import socket
import tarfile
import zlib
from collections.abc import Iterator
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
FORMATS = (
    "hf:<dataset> (Hugging Face hub), a Hugging Face parquet directory (<config>/train-*.parquet, "
    "<config>/test-*.parquet), an aclImdb directory, aclImdb_v1.tar.gz, or a .csv file"
)
CSV_BLOCK = 64 << 20  # bytes pyarrow parses at once: a review (a CSV row) may be up to this long
ACLIMDB_FILE = re.compile(r"(?:^|/)(train|test)/(pos|neg)/[^/]+\.txt$")
BATCH_ROWS = 10_000  # reviews per table a reader yields
PIECE_BYTES = 64 << 20  # parquet row groups read by one task, by their uncompressed size
ACLIMDB_PIECE_FILES = 5_000  # aclImdb files read by one task
SORT_KEYS = [("split", "ascending"), ("text", "ascending"), ("label", "ascending")]  # the canonical order
NO_SPLIT, TRAIN, TEST = -1, 0, 1  # split codes: a source's own split, or none (a CSV without a split column)


@dataclass(frozen=True)
class Piece:
    """A part of a source that one task reads: rows `start`..`stop` of what `kind` counts in (a parquet file's
    row groups, an aclImdb folder's sorted files); `first_row` numbers the rows in errors."""

    kind: str
    path: str
    split: str | None = None
    label: int | None = None
    start: int = 0
    stop: int = 0
    first_row: int = 0


@dataclass
class Source:
    path: str  # as the user gave it
    kind: str  # which reader reads it
    pieces: list[Piece]
    sha256: str  # digest of everything read, for the prepared data's fingerprint


@dataclass
class Scan:
    """What the driver learns from reading a source once: every review's split code and label (in the order
    read), the text's size, a seeded random sample of reviews and the files with non-UTF-8 bytes."""

    codes: np.ndarray  # int8
    labels: np.ndarray  # int8
    text_bytes: int
    sample: pa.Table
    decode_errors: list[str] = field(default_factory=list)  # files with non-UTF-8 bytes (decoded with U+FFFD)


@dataclass
class RawReviews:
    table: pa.Table  # text: string, label: int8, split: string (null where the source has no split)
    kind: str
    sha256: str
    decode_errors: list[str] = field(default_factory=list)


def open_source(source: str) -> Source:
    """`source`'s pieces and fingerprint, after the checks that need no rows (layout, schemas, columns)."""
    if source.startswith("hf:"):
        return _hub_source(source)
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(f"--source {source}: no such file or directory. Expected {FORMATS}.")
    if not os.access(path, os.R_OK):
        raise UserError(f"--source {source}: permission denied")
    if path.is_dir():
        aclimdb = _find_aclimdb(path)
        return _aclimdb_source(source, aclimdb) if aclimdb else _parquet_source(source, path)
    if path.name.endswith((".tar.gz", ".tgz")):
        return Source(
            source, "aclimdb-tarball", [Piece("aclimdb-tarball", str(path))], _hash_files([path], path.parent)
        )
    if path.suffix == ".csv":
        return Source(source, "csv", [Piece("csv", str(path))], _hash_files([path], path.parent))
    raise UserError(f"--source {source}: unsupported file. Expected {FORMATS}.")


def read_piece(piece: Piece, decode_errors: list[str] | None = None) -> Iterator[pa.Table]:
    """The reviews of `piece`, checked, in tables of at most BATCH_ROWS; files with non-UTF-8 bytes are added
    to `decode_errors`."""
    return _READERS[piece.kind](piece, [] if decode_errors is None else decode_errors)


def scan(source: Source, sample_size: int = 2_000, seed: int = 0) -> Scan:
    """Read every review of `source` once, one table at a time: checked, counted, and sampled (the `sample_size`
    reviews of smallest seeded random priority), so that bad input fails before any work and the work can be
    cut into ranges of the canonical order."""
    rng, decode_errors = np.random.default_rng(seed), []
    codes, labels, text_bytes = [], [], 0
    sample, priority = None, np.empty(0)
    for piece in source.pieces:
        for table in read_piece(piece, decode_errors):
            codes.append(split_codes(table["split"]))
            labels.append(table["label"].to_numpy())
            text_bytes += table["text"].nbytes
            sample = table if sample is None else pa.concat_tables([sample, table])
            priority = np.concatenate([priority, rng.random(table.num_rows)])
            if sample.num_rows > sample_size:
                kept = np.sort(np.argpartition(priority, sample_size)[:sample_size])
                sample, priority = sample.take(kept), priority[kept]
    if sample is None or not sum(map(len, labels)):
        raise UserError(f"--source {source.path}: no reviews in it")
    return Scan(
        np.concatenate(codes), np.concatenate(labels), text_bytes, sample.combine_chunks(), decode_errors
    )


def split_codes(split: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A split column as codes (NO_SPLIT, TRAIN, TEST)."""
    codes = pc.fill_null(pc.index_in(split, pa.array(["train", "test"])), NO_SPLIT)
    return codes.to_numpy(zero_copy_only=False).astype(np.int8)


def load_reviews(source: str) -> RawReviews:
    """Every review of `source` in one table, read in this process."""
    opened, decode_errors = open_source(source), []
    tables = [table for piece in opened.pieces for table in read_piece(piece, decode_errors)]
    if not sum(t.num_rows for t in tables):
        raise UserError(f"--source {source}: no reviews in it")
    return RawReviews(pa.concat_tables(tables).combine_chunks(), opened.kind, opened.sha256, decode_errors)


def _row_index(row: int) -> str:
    return f"row index {row}"  # parquet and the hub have no lines; pyarrow and pandas count rows from 0


def checked(table: pa.Table, where: str, split: str | None, at=_row_index) -> pa.Table:
    """`table` reduced to text and label, with both checked; `where` names the file in errors, `at(row)`
    the row."""
    missing = {"text", "label"} - set(table.column_names)
    if missing:
        raise UserError(
            f"{where}: missing column(s) {', '.join(sorted(missing))} "
            f"(found {', '.join(table.column_names)}); expected columns text and label"
        )
    text, label = table["text"], table["label"]
    if not pa.types.is_string(text.type) and not pa.types.is_large_string(text.type):
        raise UserError(f"{where}: column text has type {text.type}, expected strings")
    if (row := _first_false(pc.is_valid(text))) is not None:
        raise UserError(f"{where}, {at(row)}: text is missing")
    if not pa.types.is_integer(label.type):
        raise UserError(f"{where}: column label has type {label.type}, expected integers 0 and 1")
    if (row := _first_false(pc.is_in(label, pa.array([0, 1], label.type)))) is not None:
        value = label[row].as_py()
        raise UserError(
            f"{where}, {at(row)}: "
            + ("label is missing" if value is None else f"label {value} is not 0 (negative) or 1 (positive)")
        )
    split_column = pa.array([split] * len(table), pa.string())
    return pa.table({"text": text.cast(pa.string()), "label": label.cast(pa.int8()), "split": split_column})


def _first_false(mask) -> int | None:
    """The first row where `mask` is false or null, or None."""
    bad = np.flatnonzero(~pc.fill_null(mask, False).to_numpy(zero_copy_only=False))
    return int(bad[0]) if len(bad) else None


def _hash_files(paths, root: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root)).encode())
        sha256_file(path, digest)
    return digest.hexdigest()


# -- Hugging Face parquet layout: pieces of row groups -------------------------------------------------------


def _parquet_source(source: str, root: Path) -> Source:
    files = _parquet_layout(root)
    pieces = [
        piece for split, paths in files.items() for path in paths for piece in _parquet_pieces(path, split)
    ]
    return Source(source, "hf-parquet", pieces, _hash_files([p for ps in files.values() for p in ps], root))


def _parquet_pieces(path: Path, split: str) -> list[Piece]:
    """Consecutive row groups of `path`, about PIECE_BYTES each, after checking its columns."""
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable parquet file ({reason(e)})") from e
    checked(file.schema_arrow.empty_table(), str(path), split)
    pieces, start, first_row, size, rows = [], 0, 0, 0, 0
    meta = file.metadata
    for group in range(meta.num_row_groups):
        size, rows = size + meta.row_group(group).total_byte_size, rows + meta.row_group(group).num_rows
        if size >= PIECE_BYTES or group == meta.num_row_groups - 1:
            pieces.append(
                Piece("hf-parquet", str(path), split, start=start, stop=group + 1, first_row=first_row)
            )
            start, first_row, size, rows = group + 1, first_row + rows, 0, 0
    return pieces


def _read_parquet(piece: Piece, decode_errors: list[str]) -> Iterator[pa.Table]:
    first = piece.first_row
    try:
        batches = pq.ParquetFile(piece.path).iter_batches(
            BATCH_ROWS, row_groups=range(piece.start, piece.stop), columns=["text", "label"]
        )
        for batch in batches:
            yield checked(
                pa.Table.from_batches([batch]),
                piece.path,
                piece.split,
                lambda row, first=first: _row_index(first + row),
            )
            first += batch.num_rows
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{piece.path}: not a readable parquet file ({reason(e)})") from e


def _parquet_layout(root: Path) -> dict[str, list[Path]]:
    """train/test parquet files of `root` or of one config directory below it (`plain_text` preferred)."""
    configs = [root] + sorted(d for d in root.iterdir() if d.is_dir())
    found = [c for c in configs if all(sorted(c.glob(f"{s}-*.parquet")) for s in SOURCE_SPLITS)]
    if not found:
        raise UserError(
            f"--source {root}: found neither train-*.parquet and test-*.parquet (Hugging Face "
            f"layout) nor train/pos, train/neg, test/pos, test/neg (aclImdb). Expected {FORMATS}."
        )
    preferred = [c for c in found if c.name == "plain_text"]
    if len(found) > 1 and not preferred:
        names = ", ".join(c.name for c in found)
        raise UserError(f"--source {root}: several configurations ({names}); pass one of them as --source")
    config = (preferred or found)[0]
    return {s: sorted(config.glob(f"{s}-*.parquet")) for s in SOURCE_SPLITS}


# -- aclImdb: a folder of text files, or its tarball -----------------------------------------------------------


def _find_aclimdb(path: Path) -> Path | None:
    for root in (path, path / "aclImdb"):
        if all((root / s / p).is_dir() for s in SOURCE_SPLITS for p in ("pos", "neg")):
            return root
    return None


def _review_files(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".txt"))


def _aclimdb_folders(root: Path):
    for split in SOURCE_SPLITS:
        for label, folder in ((0, "neg"), (1, "pos")):
            yield split, label, root / split / folder


def _aclimdb_source(source: str, root: Path) -> Source:
    pieces = []
    for split, label, folder in _aclimdb_folders(root):
        count = len(_review_files(folder))
        pieces += [
            Piece("aclimdb-dir", str(folder), split, label, start, min(start + ACLIMDB_PIECE_FILES, count))
            for start in range(0, count, ACLIMDB_PIECE_FILES)
        ]
    files = (folder / name for _, _, folder in _aclimdb_folders(root) for name in _review_files(folder))
    return Source(source, "aclimdb-dir", pieces, _hash_files(files, root))


def _decode(data: bytes, name: str, decode_errors: list[str]) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        decode_errors.append(name)
        return data.decode("utf-8", errors="replace")


def _read_aclimdb_dir(piece: Piece, decode_errors: list[str]) -> Iterator[pa.Table]:
    folder = Path(piece.path)
    names = _review_files(folder)[piece.start : piece.stop]
    for at in range(0, len(names), BATCH_ROWS):
        texts = [
            _decode((folder / name).read_bytes(), str(folder / name), decode_errors)
            for name in names[at : at + BATCH_ROWS]
        ]
        yield _rows_to_table([(text, piece.label, piece.split) for text in texts])


def _read_tarball(piece: Piece, decode_errors: list[str]) -> Iterator[pa.Table]:
    rows, found = [], 0
    try:
        # Streaming (r|) reads members in order, never extracted; gzip.open notices a truncated archive.
        with gzip.open(piece.path) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                match = ACLIMDB_FILE.search(member.name)
                if member.isfile() and match:
                    data = tar.extractfile(member).read()
                    split, folder = match.groups()
                    rows.append((_decode(data, member.name, decode_errors), int(folder == "pos"), split))
                    if len(rows) == BATCH_ROWS:
                        found += len(rows)
                        yield _rows_to_table(rows)
                        rows = []
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise UserError(f"{piece.path}: not a readable .tar.gz archive ({reason(e)})") from e
    if not found + len(rows):
        raise UserError(f"{piece.path}: no reviews found (expected members like aclImdb/train/pos/0_9.txt)")
    if rows:
        yield _rows_to_table(rows)


def _rows_to_table(rows: list[tuple[str, int, str]]) -> pa.Table:
    text, label, split = zip(*rows) if rows else ((), (), ())
    return pa.table(
        {
            "text": pa.array(text, pa.string()),
            "label": pa.array(label, pa.int8()),
            "split": pa.array(split, pa.string()),
        }
    )


# -- CSV -----------------------------------------------------------------------------------------------------


def _read_csv(piece: Piece, decode_errors: list[str]) -> Iterator[pa.Table]:
    path = Path(piece.path)
    # Every column but label read as strings, whatever its cells hold: a block's guess of a column's type
    # (numbers in the first 64 MB, text later) would otherwise refuse a file for a column it never uses.
    strings = {
        c: pa.string() for c in {"review", "text", "sentiment", "split", *_csv_header(path)} - {"label"}
    }
    offset = 0
    for table in _csv_tables(
        path, pyarrow.csv.ReadOptions(block_size=CSV_BLOCK), pyarrow.csv.ConvertOptions(column_types=strings)
    ):
        yield _csv_reviews(table, path, offset)
        offset += table.num_rows


def _csv_header(path: Path) -> list[str]:
    """The CSV's column names as Python's csv module reads its first record ([] if it cannot: pyarrow then
    says why)."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return next(csv.reader(f), [])
    except (OSError, csv.Error):
        return []


def _csv_tables(path: Path, read_options, convert_options) -> Iterator[pa.Table]:
    """The CSV's rows, a block at a time; its header alone is an error."""
    try:
        reader = pyarrow.csv.open_csv(path, read_options=read_options, convert_options=convert_options)
        rows = 0
        for batch in reader:
            if batch.num_rows:
                rows += batch.num_rows
                yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable CSV file ({reason(e)})") from e
    if not rows:
        raise UserError(f"{path}: no reviews in it (only a header: {', '.join(reader.schema.names)})")


def _csv_reviews(table: pa.Table, path: Path, offset: int) -> pa.Table:
    """One block of the CSV as checked reviews; rows are numbered from `offset` in errors."""
    columns, original = set(table.column_names), table
    at = lambda row: f"line {_csv_line(path, offset + row)}"
    if {"review", "sentiment"} <= columns:
        sentiment = pc.utf8_lower(pc.utf8_trim_whitespace(table["sentiment"]))
        if (row := _first_false(pc.is_in(sentiment, pa.array(["negative", "positive"])))) is not None:
            raise UserError(
                f"{path}, {at(row)}: sentiment {table['sentiment'][row].as_py()!r} is not "
                "'positive' or 'negative'"
            )
        table = pa.table({"text": table["review"], "label": pc.equal(sentiment, "positive").cast(pa.int8())})
    elif not {"text", "label"} <= columns:
        raise UserError(
            f"{path}: expected columns review,sentiment or text,label (found {', '.join(table.column_names)})"
        )
    reviews = checked(table, str(path), None, at)
    if "split" in columns:
        reviews = reviews.set_column(2, "split", _csv_split(original["split"], path, at))
    return reviews


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


# -- The Hugging Face hub ------------------------------------------------------------------------------------


def _hub_source(source: str) -> Source:
    name = source[3:]
    splits = _load_hub(name)
    fingerprint = "".join(splits[s]._fingerprint for s in SOURCE_SPLITS)
    return Source(
        source,
        "hf-hub",
        [Piece("hf-hub", name, s) for s in SOURCE_SPLITS],
        hashlib.sha256(fingerprint.encode()).hexdigest(),
    )


def _load_hub(name: str):
    """The dataset's splits, from the hub or this machine's cache of it (`datasets` memory-maps them)."""
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
    if not offline and not _hub_reachable():
        raise UserError(
            f"--source hf:{name}: the Hugging Face hub cannot be reached from this machine. "
            "Pass a local copy instead: --source PATH (a Hugging Face parquet directory such as "
            "../shared/data/imdb, an aclImdb directory or tarball, or a CSV)."
        )
    import datasets  # slow to import; only the hub path needs it

    try:
        splits = datasets.load_dataset(name)
    except Exception as e:  # datasets raises many types (connection, missing file, cache miss)
        raise UserError(
            f"--source hf:{name}: could not load it ({reason(e)}). Pass a local path with --source."
        ) from e
    if not all(s in splits for s in SOURCE_SPLITS):
        raise UserError(f"--source hf:{name}: needs train and test splits (found {', '.join(splits)})")
    return splits


def _read_hub(piece: Piece, decode_errors: list[str]) -> Iterator[pa.Table]:
    table = _load_hub(piece.path)[piece.split].data.table
    for offset in range(0, table.num_rows, BATCH_ROWS):
        yield checked(
            table.slice(offset, BATCH_ROWS),
            f"hf:{piece.path} ({piece.split})",
            piece.split,
            lambda row, offset=offset: _row_index(offset + row),
        )


def _hub_reachable(timeout: float = 3.0) -> bool:
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


_READERS = {
    "hf-parquet": _read_parquet,
    "aclimdb-dir": _read_aclimdb_dir,
    "aclimdb-tarball": _read_tarball,
    "csv": _read_csv,
    "hf-hub": _read_hub,
}
