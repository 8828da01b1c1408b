"""A prepared data directory: `train/`, `val/`, `test/` parquet shards, `vocab.json`, `manifest.json`.

Shard columns: `ids` (fixed-size list<int32>[max_len], 0 = padding at the end, 1 = out-of-vocabulary),
`length` (int32, ids that are not padding), `label` (int8, 0 = negative, 1 = positive). The manifest lists
every file with its row count and SHA-256, so a tampered or half-copied directory is refused, not trained on.
"""

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from rnn_models.errors import UserError
from rnn_models.files import sha256_file

SPLITS = ("train", "val", "test")
FORMAT_VERSION = 1  # bump when the shard layout or the tokeniser changes: old fingerprints stop matching


@dataclass(frozen=True)
class PreparedData:
    root: Path
    manifest: dict

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
        return json.loads((self.root / "vocab.json").read_text())

    def files(self, split: str) -> list[str]:
        return [str(self.root / name) for name in self.manifest["splits"][split]["files"]]

    def count(self, split: str) -> int:
        return self.manifest["splits"][split]["reviews"]


def open_prepared(root: str | Path, verify: bool = True) -> PreparedData:
    """The prepared data at `root`, checked against its manifest (file list, row counts, hashes)."""
    root = Path(root)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"--data {root}: not a prepared data directory (no manifest.json). "
                        "Create one with: rnn-models prepare --source SRC --out DIR")
    try:
        manifest = json.loads(manifest_path.read_text())
        version = manifest["format"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{manifest_path}: unreadable manifest ({e}); prepare the data again with --force") from e
    if version != FORMAT_VERSION:
        raise UserError(f"{manifest_path}: format {version}, this version reads {FORMAT_VERSION}; "
                        "prepare the data again with --force")
    data = PreparedData(root, manifest)
    if verify:
        _verify(data)
    return data


def _verify(data: PreparedData) -> None:
    expected = {"vocab.json": data.vocab_sha256}
    for split in SPLITS:
        expected.update({name: f["sha256"] for name, f in data.manifest["splits"][split]["files"].items()})
    for name, sha256 in expected.items():
        path = data.root / name
        if not path.is_file():
            raise UserError(f"{data.root}: {name} is listed in manifest.json but missing; "
                            "the directory is incomplete, prepare it again with --force")
        if sha256_file(path) != sha256:
            raise UserError(f"{data.root}: {name} does not match manifest.json (changed after it was written); "
                            "prepare the data again with --force")
    extra = {str(p.relative_to(data.root)) for p in data.root.glob("*/*.parquet")} - set(expected)
    if extra:
        raise UserError(f"{data.root}: shard(s) not in manifest.json: {', '.join(sorted(extra))}; "
                        "prepare the data again with --force")
