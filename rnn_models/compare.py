"""`rnn-models compare`: several runs (say one per preset) in one table and one plot.

Runs are folders with a results.json (local paths or URIs); one row per architecture, so a search's
runs, with several trials per architecture, are not compared here. A folder of `rnn-models baseline` (its
baseline.json) adds the linear baselines' rows.

Each cell is a test accuracy with its 95 % confidence interval (normal approximation over the test
reviews); for a run of several seeds (`train --seeds`), the seeds' mean with their sample sd. Models scored on
the same reviews are compared in pairs (stats.py: the paired difference and McNemar's test), from the per-review
predictions each tested checkpoint keeps: every two architectures of a run, each architecture across runs, and
every model against the linear baselines. A review is keyed by its position in the source's canonical order
(the prepared test shards' `review`), so runs pair whenever they scored the same test reviews of one source,
whatever their val or dev size and seed; a pair whose reviews or labels differ is listed as not paired.
"""

import dataclasses
import itertools
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rnn_models.baselines import MODELS as BASELINES
from rnn_models.config import ARCHS
from rnn_models.errors import UserError
from rnn_models.files import write_json
from rnn_models.report import interval, png, pyplot
from rnn_models.stats import KEYED_BY_SOURCE_ORDER, PREDICTIONS_FILE, Paired, paired
from rnn_models.storage import Storage

log = logging.getLogger(__name__)


def _load(run: str) -> tuple[str, dict]:
    """A run's label (its preset's name, else its folder's) and its result per architecture (`_by_arch`) from its
    results.json; local path or URI."""
    storage = Storage(run)
    if storage.is_file("baseline.json") and not storage.is_file("results.json"):
        return _load_baseline(storage)
    try:
        document = json.loads(storage.read("results.json"))
        results = document["results"]
        assert all(
            {"test_accuracy", "test_reviews", "parameters", "train_seconds"} <= set(r)
            for r in results.values()
        )
        rows = _by_arch(document)  # a run of several seeds: its summary names its seeds' rows
    except (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError) as e:
        raise UserError(f"{run}: no readable results.json of a finished run ({type(e).__name__}: {e})") from e
    label = document.get("config", {}).get("preset", {}).get("name") or Path(storage.root).name
    return label, rows


def _load_baseline(storage: Storage) -> tuple[str, dict]:
    """`rnn-models baseline`'s folder as a run: a row per linear model (its n-gram weights as parameters, the
    whole run's seconds), its predictions in the folder's test_predictions.parquet."""
    try:
        document = json.loads(storage.read("baseline.json"))
        rows = {
            model: {
                "test_accuracy": r["test_accuracy"],
                "test_reviews": document["reviews"]["test"],
                "parameters": r["features"],
                "train_seconds": document["seconds"],
                "predictions": storage.root,
            }
            for model, r in document["results"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{storage.root}: no readable baseline.json ({type(e).__name__}: {e})") from e
    return "baseline", rows


def _by_arch(document: dict) -> dict[str, dict]:
    """A run's result per architecture: its trial's, or for a run of several seeds their mean (and sd)."""
    rows = {arch: r for arch, r in document["results"].items() if arch in ARCHS}
    for arch, summary in document.get("seeds", {}).items():
        seeds = [document["results"][f"{arch} seed {seed}"] for seed in summary["seeds"]]
        rows[arch] = {
            "test_accuracy": summary["test_accuracy_mean"],
            "sd": summary["test_accuracy_sd"],
            "seeds": len(seeds),
            "test_reviews": seeds[0]["test_reviews"],
            "parameters": seeds[0]["parameters"],
            "train_seconds": sum(r["train_seconds"] for r in seeds) / len(seeds),
            "per_seed": dict(zip(summary["seeds"], seeds)),  # each seed's trial: paired seed by seed
        }
    return rows


def _cell(r: dict) -> str:
    if "sd" in r:
        return f"{r['test_accuracy']:.2%} ± {r['sd']:.2%} (sd of {r['seeds']} seeds)"
    return f"{r['test_accuracy']:.2%} ± {interval(r['test_accuracy'], r['test_reviews']):.2%}"


def _labelled(runs: list[str]) -> dict[str, dict]:
    """Each run's rows under its label; runs sharing a label (two `seed` runs) are told apart by their folders."""
    loaded = [(run, *_load(run)) for run in runs]
    labels = [label for _, label, _ in loaded]
    return {
        (label if labels.count(label) == 1 else f"{label} ({Path(run).name})"): rows
        for run, label, rows in loaded
    }


def compare(runs: list[str], out: str) -> str:
    """Write comparison.md, comparison.json and comparison.png to `out`; return the markdown."""
    by_arch = _labelled(runs)
    archs = [a for a in (*ARCHS, *BASELINES) if any(a in results for results in by_arch.values())]
    rows = {
        arch: {label: results[arch] for label, results in by_arch.items() if arch in results}
        for arch in archs
    }
    lines = [
        "| architecture | "
        + " | ".join(f"{label}: test accuracy (95% CI) | params | train s" for label in by_arch)
        + " |",
        "|---|" + "---:|---:|---:|" * len(by_arch),
    ]
    for arch, cells in rows.items():
        parts = []
        for label in by_arch:
            r = cells.get(label)
            parts.append(f"{_cell(r)} | {r['parameters']:,} | {r['train_seconds']:.0f}" if r else "— | — | —")
        lines.append(f"| {arch} | " + " | ".join(parts) + " |")
    pairs = _pairs(by_arch)
    table = "\n".join(lines) + "\n" + _paired_section(pairs)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.md").write_text(table)
    summaries = {
        arch: {label: {k: v for k, v in r.items() if k != "per_seed"} for label, r in cells.items()}
        for arch, cells in rows.items()
    }  # each seed's trial is in its run's results.json
    write_json(folder / "comparison.json", {"runs": runs, "results": summaries, "paired": pairs})
    (folder / "comparison.png").write_bytes(_plot(rows, list(by_arch)))
    return table


def _predictions(arch: str, result: dict) -> dict | None:
    """A model's test reviews (their keys, in order), labels and whether it got each right: a trial's from
    its tested checkpoint, a baseline's from its folder; None for a run of several seeds' summary or a
    checkpoint written before predictions were kept."""
    folder = result.get("predictions", result.get("checkpoint"))
    try:
        storage = Storage(folder, option="--checkpoint") if folder else None
        if storage is None or not storage.is_file(PREDICTIONS_FILE):
            return None
        with storage.open(PREDICTIONS_FILE) as f:
            table = pq.read_table(f)
    except (OSError, pa.ArrowException, UserError) as e:  # an unreachable bucket: no pairs, said why
        log.warning("%s: its predictions cannot be read (%s); not paired", folder, e)
        return None
    label = table["label"].to_numpy() == 1
    if "review" in table.column_names:
        review = table["review"].to_numpy()
    else:  # a baseline file from before its rows carried keys: the rows are the split in order
        review = np.arange(table.num_rows)
    if "predictions" in result:  # a baseline's probability: right at 0.5 or more, as baseline.json counts
        right = (table[arch].to_numpy() >= 0.5) == label
    else:
        right = (table["logit"].to_numpy() > 0) == label
    order = np.argsort(review, kind="stable")  # a baseline's rows are in its split's order
    keyed = (table.schema.metadata or {}).items() >= KEYED_BY_SOURCE_ORDER.items()
    return {"keyed": keyed, "review": review[order], "label": label[order], "right": right[order]}


def _pairs(by_arch: dict[str, dict]) -> list[dict]:
    """The paired comparisons: every two architectures within a run (seed by seed in a run of several), then
    each architecture across every two runs (the same seed where both have several), and every model (each
    seed) against each baseline; only models whose predictions cover the same reviews with the same labels."""
    scored = {
        (label, arch, seed): predictions
        for label, results in by_arch.items()
        for arch, result in results.items()
        for seed, trial in result.get("per_seed", {None: result}).items()
        if (predictions := _predictions(arch, trial)) is not None
    }
    pairs = []
    for a, b in sorted(
        itertools.combinations(scored, 2), key=lambda ab: ab[0][0] != ab[1][0]
    ):  # within first
        if not _comparable(a, b):
            continue
        first, second = scored[a], scored[b]
        name_a, name_b = (
            f"{label} {arch}" + (f" seed {seed}" if seed is not None else "") for label, arch, seed in (a, b)
        )
        if len(first["review"]) < 2 or not all(
            np.array_equal(first[c], second[c]) for c in ("keyed", "review", "label")
        ):
            pairs.append({"a": name_a, "b": name_b, "skipped": "not scored on the same test reviews"})
            continue
        pairs.append(
            {"a": name_a, "b": name_b, **dataclasses.asdict(paired(first["right"], second["right"]))}
        )
    return pairs


def _comparable(a: tuple, b: tuple) -> bool:
    """Whether two models, each (run label, architecture, seed or None), make a pair worth reporting."""
    (run_a, arch_a, seed_a), (run_b, arch_b, seed_b) = a, b
    if run_a == run_b:
        return arch_a != arch_b and seed_a == seed_b
    if BASELINES.count(arch_a) + BASELINES.count(arch_b) == 1:
        return True
    return arch_a == arch_b and (seed_a == seed_b or None in (seed_a, seed_b))


def _paired_section(pairs: list[dict]) -> str:
    if not pairs:
        return ""
    lines = [
        "",
        "Paired comparisons on the same test reviews (difference in accuracy, 95% CI; McNemar's test):",
        "",
    ]
    for p in pairs:
        if "skipped" in p:
            lines.append(f"- {p['a']} vs {p['b']}: {p['skipped']}")
        else:
            lines.append(
                "- " + Paired(**{k: v for k, v in p.items() if k not in ("a", "b")}).line(p["a"], p["b"])
            )
    return "\n".join(lines) + "\n"


def _plot(rows: dict, labels: list[str]) -> bytes:
    fig, ax = pyplot().subplots(figsize=(9, 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        xs = [j + i * width for j, arch in enumerate(rows) if label in rows[arch]]
        cells = [rows[arch][label] for arch in rows if label in rows[arch]]
        ax.bar(
            xs,
            [c["test_accuracy"] for c in cells],
            width,
            label=label,
            yerr=[c.get("sd", interval(c["test_accuracy"], c["test_reviews"])) for c in cells],
            capsize=3,
        )
    ax.set_xticks([j + width * (len(labels) - 1) / 2 for j in range(len(rows))], list(rows))
    ax.set(ylabel="test accuracy", ylim=(0.5, 1.0), title="test accuracy by preset (95% CI)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return png(fig)
