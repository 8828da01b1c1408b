"""`jobs/ablation.py`: what each modelling choice is worth, one variant per row, in one plain process.

Every row trains one architecture from a base recipe (a preset) with a few options changed, on the same
prepared data, with the training pieces the Ray workers use (model builders, `torch_batches` bucketing,
optimizer, schedule, the epoch loop `fit`) but no Ray: rows differ only by their options, and a row
costs its training and scoring only. Printed as a markdown table of val accuracy and seconds, each row paired
with the first on the same val reviews (the difference's 95 % interval and McNemar's p, `stats.paired`): a
difference of a few tenths is noise more often than not.

The rows read the train and val splits only, never test: choices made from them (what goes into a preset)
must not look at the test split, which a run scores once, at its end. Prepare the data with
`--val-size 5000` for a dev split large enough to tell variants apart (2,000 reviews: ±1.3 points).
"""

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from rnn_models.config import ModelConfig, PrepareConfig, TrainConfig
from rnn_models.data.prepare import default_data_dir, prepare
from rnn_models.data.prepared import PreparedData, open_prepared
from rnn_models.errors import UserError
from rnn_models.models import model_from_config, takes_any_length
from rnn_models.presets import Preset, Recipe, load_preset
from rnn_models.stats import p_text, paired
from rnn_models.training.ingest import scoring_batches, training_batches
from rnn_models.training.loop import evaluate, fit, is_right, make_optimizer, make_scheduler, tested_epoch

log = logging.getLogger(__name__)


def split_tensors(data: PreparedData, split: str) -> dict[str, torch.Tensor]:
    """One split of prepared data as tensors, read by this process: ids (N, max_len), length, label."""
    table = pq.read_table(data.files(split))
    ids = table["ids"].combine_chunks().flatten().to_numpy().reshape(-1, data.max_len)
    return {
        "ids": torch.from_numpy(ids.copy()),
        "length": torch.from_numpy(table["length"].to_numpy().astype(np.int64)),
        "label": torch.from_numpy(table["label"].to_numpy().astype(np.float32)),
    }


def slices(tensors: dict, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False):
    """Batches of in-memory tensors, in `order` if given: the benchmark's bare loops' batches."""
    n = len(tensors["label"])
    end = n - n % batch_size if drop_last else n
    for start in range(0, end, batch_size):
        rows = order[start : start + batch_size] if order is not None else slice(start, start + batch_size)
        yield {k: v[rows] for k, v in tensors.items()}


class TensorShard:
    """A split held as tensors, read like a Ray Data shard (`iter_torch_batches`), in its stored order; `review`
    is a review's place in it, which scoring's length buckets reorder and the paired comparison puts back."""

    def __init__(self, data: PreparedData, split: str):
        self.tensors = split_tensors(data, split)
        self.tensors["review"] = torch.arange(len(self.tensors["label"]))

    def __len__(self) -> int:
        return len(self.tensors["label"])

    def iter_torch_batches(self, batch_size: int, dtypes=None, device=None):
        return slices(self.tensors, batch_size)


def run_variant(data: PreparedData, splits: dict, model_cfg: ModelConfig, train_cfg: TrainConfig) -> dict:
    """Train `model_cfg` by `train_cfg` in this process with the workers' loop (`fit`: the same epoch rules, early
    stopping included); the val accuracy per epoch and that of the tested epoch."""
    started, cpu = time.perf_counter(), torch.device("cpu")
    model = model_from_config(model_cfg, data.vocab_size, data.max_len, seed=train_cfg.seed)
    optimizer = make_optimizer(model, train_cfg)
    scheduler = make_scheduler(
        optimizer, train_cfg, steps_per_epoch=len(splits["train"]) // train_cfg.batch_size
    )
    any_length = takes_any_length(model_cfg)

    def log_epoch(history: list[dict], earlier: dict | None) -> None:
        h = history[-1]
        log.info(
            "  epoch %d: train %.4f, val %.4f (%.0f s)",
            h["epoch"],
            h["train_accuracy"],
            h["val_accuracy"],
            time.perf_counter() - started,
        )

    history, tested = fit(
        model,
        optimizer,
        scheduler,
        train_cfg,
        lambda epoch: training_batches(splits["train"], train_cfg, any_length, cpu, epoch),  # as rank 0
        lambda: scoring_batches(splits["val"], cpu, any_length),
        cpu,
        after_epoch=log_epoch,
    )
    best = tested_epoch(history, train_cfg)
    model.load_state_dict(tested)
    return {
        "val_accuracy": history[best - 1]["val_accuracy"],
        "epoch": best,
        "val_history": [h["val_accuracy"] for h in history],
        "seconds": time.perf_counter() - started,
        "val_correct": val_correct(model, splits["val"], any_length),
    }


def val_correct(model: torch.nn.Module, val: TensorShard, any_length: bool) -> np.ndarray:
    """Whether `model` gets each val review right, by the review's place in the split."""
    predictions, cpu = [], torch.device("cpu")
    evaluate(model, scoring_batches(val, cpu, any_length), cpu, predictions)
    correct = np.zeros(len(val), dtype=bool)
    for keys, labels, logits in predictions:
        correct[keys.numpy()] = is_right(logits, labels).numpy()
    return correct


def ablate(
    data: PreparedData, preset: Preset, arch: str, variants: dict[str, dict], threads: int
) -> list[dict]:
    """One row per variant: `preset`'s configs of `arch` with the variant's model/train options changed, each
    after the first paired with it on the val reviews (`vs_first`)."""
    torch.set_num_threads(threads)
    splits = {s: TensorShard(data, s) for s in ("train", "val")}  # never test: see the module's docstring
    rows = []
    for name, change in variants.items():
        try:
            model_cfg, train_cfg = Recipe(preset, change).resolve(arch)
        except UserError as e:
            raise UserError(f"--variants {name}: {e}") from e
        log.info("%s %s: %s", arch, name, json.dumps(change))
        rows.append(
            {
                "variant": name,
                "arch": arch,
                "change": change,
                **run_variant(data, splits, model_cfg, train_cfg),
            }
        )
        log.info("%s %s: val %.4f, %.0f s", arch, name, rows[-1]["val_accuracy"], rows[-1]["seconds"])
    first = rows[0].pop("val_correct") if rows else None
    for row in rows[1:]:
        row["vs_first"] = dataclasses.asdict(paired(row.pop("val_correct"), first))
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| arch | variant | change | val accuracy (epoch) | vs the first row (95% CI, paired) | McNemar p | seconds |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        change = ", ".join(f"{k}={v}" for k, v in r["change"].items()) or "(base)"
        vs = r.get("vs_first")
        versus = f"{vs['difference']:+.2%} ± {vs['interval']:.2%} | {p_text(vs['p_value'])}" if vs else "| "
        lines.append(
            f"| {r['arch']} | {r['variant']} | {change} | {r['val_accuracy']:.2%} ({r['epoch']}) "
            f"| {versus} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(
    source: str | None, data_path: str | None, preset_name: str, arch: str, variants: str, threads: int
) -> list[dict]:
    """`jobs/ablation.py`: prepare (or open) the data, then one row per variant."""
    preset = load_preset(preset_name)
    if data_path:
        data = open_prepared(data_path)
    elif source:
        data = prepare(PrepareConfig(source=source, out=default_data_dir(preset.prepare), **preset.prepare))
    else:
        raise UserError("give --source (raw reviews) or --data (prepared)")
    text = Path(variants).read_text() if Path(variants).is_file() else variants
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--variants: not JSON ({e})") from e
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise UserError('--variants: expected {"name": {"option": value, ...}, ...}')
    return ablate(data, preset, arch, parsed, threads)
