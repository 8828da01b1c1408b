"""`rnn-models predict`: the probability that a review is positive, from a checkpoint alone.

The checkpoint carries its vocabulary and tokenisation options, and the text goes through the very
functions `prepare` uses (`normalise`, `encode`), so a review is tokenised exactly as in training.
Review files are read in batches, never whole, so a file of any size is scored in constant memory.
"""

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import torch

from rnn_models.data.sources import CSV_BLOCK
from rnn_models.data.text import encode, normalise
from rnn_models.errors import UserError, reason
from rnn_models.training.checkpoint import Loaded, open_checkpoint
from rnn_models.training.loop import EVAL_BATCH

BATCH = EVAL_BATCH  # reviews scored at once
COLUMNS = ("review", "text")


class Predictor:
    def __init__(self, loaded: Loaded):
        self.model = loaded.model.eval()
        self.vocab = pa.array(loaded.vocab, pa.string())
        self.max_len = loaded.meta["data"]["max_len"]
        self.strip_br = loaded.meta["data"].get("strip_br", False)

    @classmethod
    def load(cls, checkpoint: str) -> "Predictor":
        return cls(open_checkpoint(checkpoint))

    @torch.no_grad()
    def score(self, texts: list[str]) -> tuple[list[float], list[bool]]:
        """P(positive) of each text, and whether it has any token of the vocabulary (if not, its score is
        the model's answer to an empty review: it says nothing about the text)."""
        columns = encode(normalise(pa.array(texts, pa.string()), self.strip_br), self.vocab, self.max_len)
        logits = self.model(torch.from_numpy(columns["ids"]), torch.from_numpy(columns["length"]))
        return torch.sigmoid(logits).tolist(), (columns["num_tokens"] > columns["num_oov"]).tolist()

    def probabilities(self, texts: list[str]) -> list[float]:
        """P(positive) for each text."""
        return [p for batch in batches(texts) for p in self.score(batch)[0]]


def batches(texts: Iterable[str], size: int = BATCH) -> Iterator[list[str]]:
    texts = iter(texts)
    while batch := list(itertools.islice(texts, size)):
        yield batch


def read_reviews(path: str) -> list[str]:
    """Every review of a file (see `review_batches`), in one list."""
    return [text for batch in review_batches(path) for text in batch]


def review_batches(path: str) -> Iterator[list[str]]:
    """Reviews from a text file (one per line, blank lines skipped), or a CSV / parquet file with a `review`
    or `text` column, in batches. The file and its columns are checked now, before any review is scored."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--file {path}: no such file")
    try:
        if file.suffix == ".parquet":
            return _parquet_batches(file)
        if file.suffix == ".csv":
            return _csv_batches(file)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:  # a header that is not UTF-8: the last
        raise UserError(f"--file {path}: unreadable ({reason(e)})") from e
    return _text_batches(file)


def _column(names: list[str], file: Path) -> str:
    column = next((c for c in COLUMNS if c in names), None)
    if column is None:
        raise UserError(f"--file {file}: needs a review or text column (found {', '.join(names) or 'none'})")
    return column


def _parquet_batches(file: Path) -> Iterator[list[str]]:
    reader = pq.ParquetFile(file)
    column = _column(reader.schema_arrow.names, file)
    kind = reader.schema_arrow.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise UserError(f"--file {file}: column {column} has type {kind}, expected strings")
    return _guarded(
        ([t or "" for t in b.column(0).to_pylist()] for b in reader.iter_batches(BATCH, columns=[column])),
        file,
    )


def _csv_batches(file: Path) -> Iterator[list[str]]:
    blocks = pyarrow.csv.ReadOptions(block_size=CSV_BLOCK)
    strings = pyarrow.csv.ConvertOptions(
        column_types={c: pa.string() for c in COLUMNS}
    )  # "12" is a review too
    reader = pyarrow.csv.open_csv(file, read_options=blocks, convert_options=strings)
    column = _column(reader.schema.names, file)
    index = reader.schema.get_field_index(column)
    texts = (t or "" for b in _guarded(reader, file) for t in b.column(index).to_pylist())
    return batches(texts)


def _text_batches(file: Path) -> Iterator[list[str]]:
    return _guarded(batches(_lines(file)), file)


def _lines(file: Path) -> Iterator[str]:
    with open(file, encoding="utf-8", errors="replace") as f:  # bytes that are not UTF-8 become U+FFFD
        yield from (line.rstrip("\r\n") for line in f if line.strip())


def _guarded(items: Iterable, file: Path) -> Iterator:
    """`items`, a pyarrow error part-way through the file (a malformed row) becoming a `UserError`."""
    try:
        yield from items
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise UserError(f"--file {file}: unreadable ({reason(e)})") from e
