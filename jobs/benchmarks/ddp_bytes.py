"""The `ddp_bytes` section: what DDP all-reduces per training step, for each preset's models.

DDP all-reduces every parameter's gradient every step, dense: the embedding tables' too, although a step
touches only the rows of the tokens (and hashed bigrams) in its batch. Measured here: the dense bytes per step,
the tables' share, and the rows a step really touches (the mean over `batches` batches of IMDB train reviews,
tokenised as the preset prepares them), so what sparse table gradients would send instead: the other
parameters dense, plus per touched row its values and its index (8 bytes), per rank.
"""

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from rnn_models.config import ARCHS, PrepareConfig
from rnn_models.data.prepare import _summarise, count_vocabulary
from rnn_models.data.sources import load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import encode, normalise
from rnn_models.models import model_from_config
from rnn_models.models.layers import bigram_ids
from rnn_models.presets import BUILTIN, Recipe, load_preset

INDEX_BYTES = 8  # a sparse row's int64 index


def ddp_bytes(source: str, batches: int = 20, seed: int = 0) -> dict:
    """Per preset and architecture: dense bytes all-reduced per step, the tables' part, touched rows per step
    and the bytes per rank with sparse table gradients."""
    reviews = load_reviews(source).table
    figures = {}
    for name in BUILTIN:
        preset = load_preset(name)
        prepare = PrepareConfig(**preset.prepare)
        train = split_reviews(reviews, prepare)["train"]
        tokens = normalise(train["text"], prepare.strip_br)
        vocab = count_vocabulary(_summarise(tokens, "train"), prepare.vocab_size)  # as prepare ranks it
        for arch in ARCHS:
            model_cfg, train_cfg = Recipe(preset).resolve(arch)
            model = model_from_config(model_cfg, prepare.vocab_size, prepare.max_len)
            rng = np.random.default_rng(seed)
            picks = [rng.choice(len(train), train_cfg.batch_size, replace=False) for _ in range(batches)]
            ids = [
                torch.from_numpy(encode(tokens.take(pa.array(p)), vocab, prepare.max_len)["ids"])
                for p in picks
            ]
            figures[f"{name} {arch}"] = _step_bytes(model, ids)
    return figures


def _step_bytes(model: nn.Module, batches: list[torch.Tensor]) -> dict:
    tables = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    dense = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    table_bytes = sum(t.weight.numel() * t.weight.element_size() for t in tables)
    touched = [[len(torch.unique(_rows_of(t, model, ids))) for t in tables] for ids in batches]
    rows = np.mean([sum(counts) for counts in touched])
    row_bytes = [t.weight.shape[1] * t.weight.element_size() + INDEX_BYTES for t in tables]
    sparse = (
        dense - table_bytes + np.mean([sum(n * b for n, b in zip(counts, row_bytes)) for counts in touched])
    )
    return {
        "dense_bytes": dense,
        "table_bytes": table_bytes,
        "touched_rows": float(rows),
        "sparse_bytes": float(sparse),
        "ratio": dense / sparse,
    }


def _rows_of(table: nn.Embedding, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The rows of `table` a batch of `ids` reads: the token ids, or their hashed bigrams for a bigram table."""
    if table is getattr(model, "bigram_embedding", None):
        return bigram_ids(ids, table.num_embeddings).flatten()
    return ids.flatten()


def report_lines(figures: dict) -> list[str]:
    lines = [
        "## DDP: gradient bytes all-reduced per step (per rank)",
        "| preset, architecture | dense | of which tables | rows a step touches | with sparse tables | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {key} | {f['dense_bytes'] / 2**20:,.1f} MB | {f['table_bytes'] / 2**20:,.1f} MB | "
        f"{f['touched_rows']:,.0f} | {f['sparse_bytes'] / 2**20:,.2f} MB | {f['ratio']:,.0f}x |"
        for key, f in figures.items()
    ]
    return lines + [""]
