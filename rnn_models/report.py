"""The run's report: `results.json`, `results.md` (also printed) and `curves.png`, in `<storage>/<name>/`."""

import io
import json
import math
import statistics

from rnn_models.config import ARCHS
from rnn_models.storage import Storage

RESULT_KEYS = (
    "test_accuracy",
    "val_accuracy",
    "tested_epoch",
    "epochs",
    "train_seconds",
    "samples_per_second",
    "parameters",
    "test_reviews",
    "checkpoint",
)


def write_report(storage: Storage, name: str, results: list[dict], context: dict) -> str:
    """Write the three report files for `results` (one per trial); returns the markdown table."""
    results = sorted(results, key=lambda r: (ARCHS.index(r["arch"]), -r["val_accuracy"]))
    document = {"name": name, **context, "results": {_label(r, results): _entry(r) for r in results}}
    seeds = seed_summary(results)
    if seeds:
        document["seeds"] = seeds
    table = results_table(results) + (f"\n{seeds_table(seeds)}" if seeds else "")
    storage.write(json.dumps(document, indent=2).encode() + b"\n", name, "results.json")
    storage.write(table.encode(), name, "results.md")
    storage.write(curves_png(results), name, "curves.png")
    return table


def _entry(result: dict) -> dict:
    return {**{k: result[k] for k in RESULT_KEYS}, "model": result["model"], "train": result["train"]}


def _label(result: dict, results: list[dict]) -> str:
    """The arch; where one arch ran as several trials, arch + seed (`--seeds`) or arch + trial id (a search)."""
    same = [r for r in results if r["arch"] == result["arch"]]
    if len(same) == 1:
        return result["arch"]
    by_seed = len({r["train"]["seed"] for r in same}) == len(same)
    return (
        f"{result['arch']} seed {result['train']['seed']}"
        if by_seed
        else f"{result['arch']}-{result['trial_id']}"
    )


def seed_summary(results: list[dict]) -> dict:
    """Per arch trained with several seeds (`--seeds`): the seeds, and test and val accuracy as mean and sample sd."""
    summary = {}
    for arch in dict.fromkeys(r["arch"] for r in results):
        same = sorted((r for r in results if r["arch"] == arch), key=lambda r: r["train"]["seed"])
        if len(same) < 2 or not _label(same[0], results).startswith(f"{arch} seed "):
            continue
        summary[arch] = {"seeds": [r["train"]["seed"] for r in same]}
        for metric in ("test_accuracy", "val_accuracy"):
            values = [r[metric] for r in same]
            summary[arch][f"{metric}_mean"] = statistics.fmean(values)
            summary[arch][f"{metric}_sd"] = statistics.stdev(values)
    return summary


def seeds_table(summary: dict) -> str:
    lines = [
        "| architecture | seeds | test accuracy, mean ± sd | val accuracy, mean ± sd |",
        "|---|---|---:|---:|",
    ]
    for arch, s in summary.items():
        lines.append(
            f"| {arch} | {', '.join(map(str, s['seeds']))} | {s['test_accuracy_mean']:.2%} ± "
            f"{s['test_accuracy_sd']:.2%} | {s['val_accuracy_mean']:.2%} ± {s['val_accuracy_sd']:.2%} |"
        )
    return "\n".join(lines) + "\n"


def interval(accuracy: float, n: int) -> float:
    """Half-width of the 95 % confidence interval of an accuracy over `n` reviews (normal approximation)."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n) if n else math.nan


def results_table(results: list[dict]) -> str:
    lines = [
        "| architecture | test accuracy (95% CI) | val accuracy | tested epoch | epochs | parameters | train s "
        "| samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        test = f"{r['test_accuracy']:.2%} ± {interval(r['test_accuracy'], r['test_reviews']):.2%}"
        lines.append(
            f"| {_label(r, results)} | {test} | {r['val_accuracy']:.2%} | {r['tested_epoch']} | {r['epochs']} "
            f"| {r['parameters']:,} | {r['train_seconds']:.0f} | {r['samples_per_second']:,.0f} |"
        )
    return "\n".join(lines) + "\n"


def curves_png(results: list[dict]) -> bytes:
    """Train and val accuracy per epoch, one line per trial."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for r in results:
        epochs = [h["epoch"] for h in r["history"]]
        for ax, key in zip(axes, ("train_accuracy", "val_accuracy")):
            ax.plot(epochs, [h[key] for h in r["history"]], marker="o", label=_label(r, results))
    for ax, title in zip(axes, ("train accuracy", "val accuracy")):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[1].legend()
    return png(fig)


def pyplot():
    """matplotlib's pyplot without a display (cluster nodes have none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    return buffer.getvalue()
