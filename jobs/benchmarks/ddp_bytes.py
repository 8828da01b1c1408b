"""The `ddp_bytes` section: what DDP ranks send per training step, for each preset's models.

DDP all-reduces every parameter's gradient every step, dense: the embedding tables' too, although a step
touches only the rows of the tokens (and hashed bigrams) in its batch. `--table-grads rows` (the default,
training/table_rows.py) sends those rows only. Figured here, from `batches` batches of IMDB train reviews
tokenised as the preset prepares them: the dense bytes per step, the tables' share, the rows a step touches and
what sending them costs (values and an 8-byte index per row). Measured (`steps` > 0): two gloo ranks on this
machine train real steps of the preset's recipe both ways, counting the bytes each rank hands to the
collectives (DDP's buckets through a comm hook, table_rows' all-gathers) and timing the steps.
"""

import json
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

import rnn_models.training.loop as loop
from rnn_models.config import ARCHS, PrepareConfig
from rnn_models.data.prepare import _summarise, count_vocabulary
from rnn_models.data.sources import load_reviews
from rnn_models.data.splits import split_reviews
from rnn_models.data.text import encode, normalise
from rnn_models.models import model_from_config, takes_any_length
from rnn_models.models.layers import bigram_ids
from rnn_models.presets import BUILTIN, Recipe, load_preset
from rnn_models.training import table_rows

INDEX_BYTES = 8  # a sparse row's int64 index


def ddp_bytes(source: str, batches: int = 20, seed: int = 0, steps: int = 3) -> dict:
    """Per preset and architecture: dense bytes all-reduced per step, the tables' part, touched rows per step
    and the bytes per rank with sparse table gradients; with `steps`, those measured on two ranks."""
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
            encoded = [encode(tokens.take(pa.array(p)), vocab, prepare.max_len) for p in picks]
            ids = [torch.from_numpy(e["ids"]) for e in encoded]
            figures[f"{name} {arch}"] = _step_bytes(model, ids)
            if steps:
                labels = [train["label"].take(pa.array(p)).to_numpy().astype(np.float32) for p in picks]
                cut = takes_any_length(model_cfg)
                batches_ = [_batch(e, y, cut) for e, y in zip(encoded, labels)]
                sizes = (prepare.vocab_size, prepare.max_len)
                figures[f"{name} {arch}"]["measured"] = measured(model_cfg, train_cfg, sizes, batches_, steps)
    return figures


def _batch(encoded: dict, labels: np.ndarray, cut: bool) -> dict:
    """A training batch, cut at its longest review as length-bucketed batches are if the model takes it."""
    longest = int(encoded["length"].max()) if cut else encoded["ids"].shape[1]
    return {
        "ids": torch.from_numpy(encoded["ids"][:, :longest]),
        "length": torch.from_numpy(encoded["length"]),
        "label": torch.from_numpy(labels),
    }


def measured(model_cfg, train_cfg, sizes: tuple[int, int], batches: list[dict], steps: int) -> dict:
    """Two gloo ranks each train one warm-up step and `steps` timed steps of their own batches, with the tables'
    gradients added up 'dense' (DDP) and as 'rows': per mode, the bytes a rank sent per step and seconds per
    step (the two ranks share this machine's cores)."""
    if len(batches) < 2 * (steps + 1):
        raise ValueError(f"{len(batches)} batches: two ranks need {2 * (steps + 1)} for {steps} steps each")
    with tempfile.TemporaryDirectory() as folder:
        torch.multiprocessing.spawn(  # not forked: a fork of a process running Ray's threads may hang
            _rank, args=(folder, model_cfg, train_cfg, sizes, batches, steps), nprocs=2
        )
        return json.loads(open(os.path.join(folder, "rank0.json")).read())


def _rank(rank, folder, model_cfg, train_cfg, sizes, batches, steps) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    torch.set_num_threads(1)
    sent = []  # bytes this rank handed to the collectives, this step
    add_up_rows = table_rows.add_up_rows
    loop.add_up_rows = lambda model: sent.append(add_up_rows(model))  # count what train_epoch's call sends
    figures = {}
    for mode in ("dense", "rows"):
        model = model_from_config(model_cfg, *sizes, seed=train_cfg.seed)
        if mode == "rows":
            table_rows.leave_tables_to_rows(model)
        model = nn.parallel.DistributedDataParallel(model)
        model.register_comm_hook(sent, _counted_allreduce)
        optimizer = loop.make_optimizer(model, train_cfg)
        mine = batches[rank::2][: steps + 1]

        def epoch(part):
            return loop.train_epoch(
                model, part, optimizer, torch.device("cpu"), train_cfg.grad_clip, None, train_cfg.adversarial
            )

        epoch(mine[:1])  # the warm-up step: DDP builds its buckets
        sent.clear()
        started = time.perf_counter()
        epoch(mine[1:])
        figures[mode] = {"bytes": sum(sent) / steps, "seconds": (time.perf_counter() - started) / steps}
    if rank == 0:
        with open(os.path.join(folder, "rank0.json"), "w") as f:
            json.dump(figures, f)
    dist.destroy_process_group()


def _counted_allreduce(sent: list, bucket):
    sent.append(bucket.buffer().numel() * bucket.buffer().element_size())
    return allreduce_hook(None, bucket)


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
    if any(table is getattr(m, "bigram_embedding", None) for m in model.modules()):  # the bag's or inputs'
        return bigram_ids(ids, table.num_embeddings).flatten()
    return ids.flatten()


def report_lines(figures: dict) -> list[str]:
    lines = [
        "## DDP: gradient bytes sent per step (per rank)",
        "Figured from 20 batches of IMDB train reviews; measured: two gloo ranks on this machine, real steps of "
        "the preset's recipe (a warm-up step, then the mean of the others).",
        "",
        "| preset, architecture | dense | of which tables | rows a step touches | with rows (figured) "
        "| measured dense | measured rows | ratio | step dense | step rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, f in figures.items():
        m = f.get("measured")
        line = (
            f"| {key} | {f['dense_bytes'] / 2**20:,.1f} MB | {f['table_bytes'] / 2**20:,.1f} MB | "
            f"{f['touched_rows']:,.0f} | {f['sparse_bytes'] / 2**20:,.2f} MB |"
        )
        if m:
            line += (
                f" {m['dense']['bytes'] / 2**20:,.1f} MB | {m['rows']['bytes'] / 2**20:,.2f} MB | "
                f"{m['dense']['bytes'] / m['rows']['bytes']:,.0f}x | {m['dense']['seconds']:.2f} s | "
                f"{m['rows']['seconds']:.2f} s |"
            )
        else:
            line += " | | | | |"
        lines.append(line)
    return lines + [""]
