"""`rnn-models predict`: the probability that a review is positive, from a checkpoint alone.

The checkpoint carries its vocabulary and tokenisation options, and the text goes through the very
functions `prepare` uses (`normalise`, `encode`), so a review is tokenised exactly as in training.
"""

from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import torch

from rnn_models.data.text import encode, normalise
from rnn_models.errors import UserError
from rnn_models.training.checkpoint import Loaded
from rnn_models.training.evaluation import open_checkpoint


class Predictor:
    def __init__(self, loaded: Loaded):
        self.model = loaded.build_model().eval()
        self.vocab = pa.array(loaded.vocab, pa.string())
        self.max_len = loaded.meta["data"]["max_len"]
        self.strip_br = loaded.meta["data"].get("strip_br", False)

    @classmethod
    def load(cls, checkpoint: str) -> "Predictor":
        return cls(open_checkpoint(checkpoint))

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 512) -> list[float]:
        """P(positive) for each text."""
        out = []
        for start in range(0, len(texts), batch_size):
            columns = encode(normalise(pa.array(texts[start:start + batch_size], pa.string()), self.strip_br),
                             self.vocab, self.max_len)
            logits = self.model(torch.from_numpy(columns["ids"]), torch.from_numpy(columns["length"]))
            out += torch.sigmoid(logits).tolist()
        return out


def read_reviews(path: str) -> list[str]:
    """Reviews from a text file (one per line), or a CSV / parquet file with a `review` or `text` column."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--file {path}: no such file")
    if file.suffix in (".csv", ".parquet"):
        try:
            table = pq.read_table(file) if file.suffix == ".parquet" else pyarrow.csv.read_csv(file)
        except (pa.ArrowException, OSError) as e:
            raise UserError(f"--file {path}: unreadable ({e})") from e
        column = next((c for c in ("review", "text") if c in table.column_names), None)
        if column is None:
            raise UserError(f"--file {path}: needs a review or text column (found {', '.join(table.column_names)})")
        return [t or "" for t in table[column].to_pylist()]
    return [line.rstrip("\n") for line in file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
