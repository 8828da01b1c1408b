"""The `scale` section: `prepare` as the corpus grows, on deterministic synthetic corpora (no download).

Each size is IMDB rebuilt `factor` times over: every review of a copy is made of as many sentences as an IMDB
review has, each drawn (seeded) from a review of the same label and split. `prepare` runs on each in a process
of its own (`rnn-models prepare`, on a local Ray of its own or the cluster at `--address`, writing under
`--scale-out`, a folder or a bucket), timed, while the peak resident memory of its driver process (VmHWM) is
read, the figure that must stay flat as the data grows.
"""

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rnn_models.data.sources import load_reviews

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def synthetic_corpus(source: str, out: Path, factor: int, seed: int = 0) -> Path:
    """IMDB rebuilt `factor` times from its own sentences, as a Hugging Face parquet folder at `out`."""
    reviews = load_reviews(source).table
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        rows = reviews.filter(pa.compute.equal(reviews["split"], split))
        texts, labels = rows["text"].to_pylist(), rows["label"].to_numpy()
        sentences = [SENTENCE_END.split(t) for t in texts]
        built, built_labels = [], []
        for _ in range(factor):
            for label in (0, 1):
                same = np.flatnonzero(labels == label)
                for i in same:  # as many sentences as review i, each from a random review of its label
                    donors = rng.choice(same, len(sentences[i]))
                    picks = rng.random(len(donors))
                    built.append(
                        " ".join(sentences[d][int(p * len(sentences[d]))] for d, p in zip(donors, picks))
                    )
                    built_labels.append(label)
        folder = out / "plain_text"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table({"text": built, "label": pa.array(built_labels, pa.int64())}),
            folder / f"{split}-00000-of-00001.parquet",
            row_group_size=5_000,
        )  # as IMDB's own
    return out


def prepare_at(source: Path, out: str, address: str | None = None) -> dict:
    """`rnn-models prepare --force` in its own process (on the cluster at `address`, else a local Ray of its
    own): wall seconds and the driver's peak RSS."""
    started = time.perf_counter()
    command = [
        sys.executable,
        "-m",
        "rnn_models",
        "prepare",
        "--source",
        str(source),
        "--out",
        out,
        "--force",
    ]
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: nothing reads it until the end
        process = subprocess.Popen(
            command + (["--address", address] if address else []),
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        peak = 0
        while process.poll() is None:
            peak = max(peak, _peak_rss(process.pid))
            time.sleep(0.2)
        if process.returncode:
            err.seek(0)
            raise RuntimeError(f"prepare of {source} failed: {err.read()[-2000:]}")
    return {"seconds": time.perf_counter() - started, "driver_peak_rss_mb": peak / 2**20}


def _peak_rss(pid: int) -> int:
    """VmHWM, the process's peak resident set so far (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return 1024 * int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), 0))


def scale(
    source: str,
    work: Path,
    factors: tuple[int, ...] = (1, 4, 16),
    address: str | None = None,
    out: str | None = None,
) -> dict:
    """`prepare` on each synthetic size into `out` (default `work`): reviews, wall time, reviews/s and the
    driver's peak RSS."""
    sizes, out = {}, (out or str(work)).rstrip("/")
    for factor in factors:
        corpus = synthetic_corpus(source, work / f"synthetic-{factor}x", factor)
        figures = prepare_at(corpus, f"{out}/prepared-synthetic-{factor}x", address)
        reviews = sum(pq.read_metadata(f).num_rows for f in (corpus / "plain_text").glob("*.parquet"))
        sizes[f"{factor}x"] = {
            "reviews": reviews,
            **figures,
            "reviews_per_second": reviews / figures["seconds"],
        }
    return sizes


def report_lines(sizes: dict) -> list[str]:
    lines = [
        "## Scale: prepare as the corpus grows",
        "| corpus | reviews | seconds | reviews/s | driver peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {size} | {s['reviews']:,} | {s['seconds']:.0f} | {s['reviews_per_second']:,.0f} | "
        f"{s['driver_peak_rss_mb']:,.0f} MB |"
        for size, s in sizes.items()
    ]
    return lines + [""]
