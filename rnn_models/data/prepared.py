"""A prepared data folder: `train/`, `val/`, `test/` parquet shards, `vocab.json`, `manifest.json`.

Shard columns: `ids` (fixed-size list<int32>[max_len], 0 = padding at the end, 1 = out-of-vocabulary),
`length` (int32, ids that are not padding), `label` (int8, 0 = negative, 1 = positive); the test shards also
`review` (int64): the review's position in the source's canonical order (`splits.py`), the same whatever the
val size, seed or sample, so that runs prepared differently still pair their predictions on a review. The
manifest lists
every file with its row count, size and SHA-256, so a tampered or half-copied folder is refused, not trained
on: its names and sizes are checked on every open (one listing), its hashes where asked (`verify`).
The folder is a local path or a URI (`s3://…`, `gs://…`): see `storage.py`.
"""

import json
from dataclasses import dataclass
from functools import cached_property

import pyarrow

from rnn_models.errors import UserError, reason
from rnn_models.files import sha256_stream
from rnn_models.storage import Storage
from rnn_models.validation import Manifest, document

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 2  # bump when the shard layout or the tokeniser changes: old fingerprints stop matching
# (2: the test shards' `review` column)


@dataclass(frozen=True)
class PreparedData:
    folder: Storage
    manifest: dict

    @property
    def root(self) -> str:
        return self.folder.root

    @property
    def max_len(self) -> int:
        return self.manifest["options"]["max_len"]

    @property
    def vocab_size(self) -> int:
        return self.manifest["vocab"]["size"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def vocab_sha256(self) -> str:
        return self.manifest["vocab"]["sha256"]

    @cached_property
    def vocab(self) -> list[str]:
        return json.loads(self.folder.read("vocab.json"))

    def names(self, split: str) -> list[str]:
        """The split's shards, relative to the folder."""
        return list(self.manifest["splits"][split]["files"])

    def files(self, split: str) -> list[str]:
        """The split's shards as paths or URIs."""
        return [self.folder.join(name) for name in self.names(split)]

    def count(self, split: str) -> int:
        return self.manifest["splits"][split]["reviews"]


def open_prepared(root: str, verify: bool = False) -> PreparedData:
    """The prepared data at `root` (path or URI), checked against its manifest: its file names and sizes, and
    with `verify` every file's SHA-256 too (which reads every byte)."""
    folder = Storage(str(root), option="--data")
    try:
        if not folder.is_file("manifest.json"):
            raise UserError(
                f"--data {root}: not a prepared data directory (no manifest.json). "
                "Create one with: rnn-models prepare --source SRC --out DIR"
            )
        manifest = json.loads(folder.read("manifest.json"))
        version = manifest["format"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UserError(
            f"{folder.join('manifest.json')}: unreadable manifest ({e}); prepare the data again with --force"
        ) from e
    except READ_ERRORS as e:
        raise unreadable(root, e) from e
    document(Manifest, manifest, folder.join("manifest.json"), hint="; prepare the data again with --force")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{folder.join('manifest.json')}: format {version}, this version reads {FORMAT_VERSION}; "
            "prepare the data again with --force"
        )
    data = PreparedData(folder, manifest)
    try:
        _check_files(data, verify)
    except READ_ERRORS as e:  # a bucket that answered once may still fail or time out mid-way
        raise unreadable(root, e) from e
    return data


READ_ERRORS = (OSError, pyarrow.ArrowException)  # an unreachable bucket, missing credentials, a timeout


def unreadable(root: str, error: Exception) -> UserError:
    return UserError(f"--data {root}: cannot be read ({reason(error)})")


def _check_files(data: PreparedData, hashes: bool) -> None:
    expected = {"vocab.json": {"sha256": data.vocab_sha256}}
    for split in SPLITS:
        expected.update(data.manifest["splits"][split]["files"])
    listed = data.folder.sizes()
    for name, written in expected.items():
        if name not in listed:
            raise UserError(
                f"{data.root}: {name} is listed in manifest.json but missing; "
                "the folder is incomplete, prepare it again with --force"
            )
        if written.get("bytes", listed[name]) != listed[name]:  # older manifests have no sizes
            raise UserError(
                f"{data.root}: {name} does not match manifest.json ({listed[name]} bytes, written "
                f"with {written['bytes']}: changed after it was written); prepare the data again with --force"
            )
        if hashes:
            with data.folder.open(name) as stream:
                if sha256_stream(stream) != written["sha256"]:
                    raise UserError(
                        f"{data.root}: {name} does not match manifest.json (changed after it was "
                        "written); prepare the data again with --force"
                    )
    extra = {name for name in listed if name.endswith(".parquet") and name.count("/") == 1} - set(expected)
    if extra:
        raise UserError(
            f"{data.root}: shard(s) not in manifest.json: {', '.join(sorted(extra))}; "
            "prepare the data again with --force"
        )
