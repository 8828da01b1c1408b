"""A small labelled corpus written in every source format `prepare` reads."""

import csv
import io
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# (text, label, split); words repeat so that the vocabulary has clear counts and ties.
REVIEWS = [
    ("A great movie. Great acting, great fun!", 1, "train"),
    ("Terrible plot; terrible acting. Boring.", 0, "train"),
    ("I loved it <br /><br />Loved the music too.", 1, "train"),
    ("Worst film ever... a waste of time.", 0, "train"),
    ("Fun, fun, fun: the best film of the year!", 1, "train"),
    ("Boring and slow. The acting was bad.", 0, "train"),
    ("Café scenes were lovely — naïve but charming 😀", 1, "train"),
    ("", 0, "train"),
    ("A masterpiece of cinema.", 1, "test"),
    ("Bad, bad, bad.", 0, "test"),
    ("   ", 1, "test"),
    ("Not great, not terrible.", 0, "test"),
]


def write_hf_parquet(root: Path, reviews=REVIEWS) -> Path:
    (root / "plain_text").mkdir(parents=True)
    for split in ("train", "test"):
        rows = [(t, label) for t, label, s in reviews if s == split]
        table = pa.table(
            {"text": [t for t, _ in rows], "label": pa.array([label for _, label in rows], pa.int64())}
        )
        pq.write_table(table, root / "plain_text" / f"{split}-00000-of-00001.parquet")
    return root


def _aclimdb_files(reviews=REVIEWS):
    for i, (text, label, split) in enumerate(reviews):
        rating = 8 if label else 2
        yield f"aclImdb/{split}/{'pos' if label else 'neg'}/{i}_{rating}.txt", text.encode()


def write_aclimdb_dir(root: Path, reviews=REVIEWS) -> Path:
    for split in ("train", "test"):
        for folder in ("pos", "neg"):
            (root / "aclImdb" / split / folder).mkdir(parents=True)
    (root / "aclImdb" / "train" / "unsup").mkdir()  # ignored, as in the real archive
    for name, data in _aclimdb_files(reviews):
        (root / name).write_bytes(data)
    return root / "aclImdb"


def write_tarball(path: Path, reviews=REVIEWS) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("aclImdb/README"), io.BytesIO(b""))
        for name, data in _aclimdb_files(reviews):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_csv(path: Path, reviews=REVIEWS, style: str = "review,sentiment") -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if style == "review,sentiment":
            writer.writerow(["review", "sentiment", "split"])
            writer.writerows((t, "positive" if label else "negative", s) for t, label, s in reviews)
        else:
            writer.writerow(["text", "label", "split"])
            writer.writerows(reviews)
    return path
