"""Folders on any filesystem pyarrow opens: a local path, or a URI (file://, s3://, gs://, ...).

Run storage (`--storage`) and prepared data (`--data`, `prepare --out`) are both such folders. A local
path is a folder on one node's disk; a URI names storage every node can reach (a bucket), or, as
`file:///path`, a folder the user says every node mounts at the same path.
"""

import json
import os
import uuid
from pathlib import Path

import pyarrow.fs

from rnn_models.errors import UserError


def is_uri(path: str) -> bool:
    return "://" in path


def absolute(path: str, option: str) -> str:
    """`path` made absolute (a URI is kept as is), refused where a relative path would be lost.

    Under `ray job submit --working-dir`, the job runs in a temporary copy of that folder, deleted with
    the job: a relative path would silently write the data or the runs there.
    """
    if is_uri(path) or os.path.isabs(os.path.expanduser(path)):
        return path if is_uri(path) else str(Path(path).expanduser().resolve())
    if _in_submitted_job_working_dir():
        raise UserError(
            f"{option} {path}: a relative path under `ray job submit --working-dir` points into the "
            "job's temporary copy of the working directory, which is deleted with the job; give an "
            f"absolute path (e.g. {option} /home/ray/{path}) or a bucket URI (s3://…, gs://…)"
        )
    return str(Path(path).resolve())


def _in_submitted_job_working_dir() -> bool:
    """Whether this process is a job's driver started by `ray job submit` with a working directory."""
    try:
        job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    except ValueError:
        return False
    return bool((job_config.get("runtime_env") or {}).get("working_dir"))


class Storage:
    """A folder `root` (a path or URI) and the pyarrow filesystem that holds it."""

    def __init__(self, root: str, option: str = "--storage"):
        self.option = option
        self.root = root.rstrip("/") if is_uri(root) else str(Path(root).expanduser().resolve())
        try:
            self.fs, self.base = pyarrow.fs.FileSystem.from_uri(self.root)
        except (pyarrow.ArrowException, ValueError, OSError) as e:
            raise UserError(f"{option} {root}: not a path or URI that pyarrow can open ({e})") from e

    @property
    def is_local(self) -> bool:
        """A folder on this node's disk only (not a URI, so not declared shared)."""
        return not is_uri(self.root)

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def path(self, *parts: str) -> str:
        """The path of `parts` inside `fs` (for pyarrow calls that take a filesystem and a path)."""
        return "/".join([self.base, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pyarrow.fs.FileType.NotFound

    def is_file(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type == pyarrow.fs.FileType.File

    def files(self, pattern_suffix: str = "") -> list[str]:
        """Every file below the folder whose name ends with `pattern_suffix`, relative to it."""
        return sorted(self.sizes(pattern_suffix))

    def sizes(self, pattern_suffix: str = "") -> dict[str, int]:
        """`files`, each with its size in bytes: one listing (a bucket answers it in one request per 1,000)."""
        selector = pyarrow.fs.FileSelector(self.base, recursive=True, allow_not_found=True)
        return {
            info.path[len(self.base) + 1 :]: info.size
            for info in self.fs.get_file_info(selector)
            if info.type == pyarrow.fs.FileType.File and info.path.endswith(pattern_suffix)
        }

    def check_writable(self) -> None:
        """Fail now, not after hours of training, if results could not be written."""
        probe = self.path(f".write-check-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except (OSError, pyarrow.ArrowException) as e:
            raise UserError(f"{self.option} {self.root}: cannot write there ({e})") from e

    def write(self, data: bytes, *parts: str) -> str:
        """Write a file whole: to a temporary name first, then renamed, so no reader sees a part of it."""
        final = self.path(*parts)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)
        return self.join(*parts)

    def download(self, local: Path, *parts: str) -> None:
        """Copy the file `parts` to the local path `local`."""
        pyarrow.fs.copy_files(
            self.path(*parts),
            str(local),
            source_filesystem=self.fs,
            destination_filesystem=pyarrow.fs.LocalFileSystem(),
        )

    def delete(self, *parts: str) -> None:
        if self.is_file(*parts):
            self.fs.delete_file(self.path(*parts))

    def read(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def open(self, *parts: str):
        """A readable stream of one file (for hashing or parquet reads without a local copy)."""
        return self.fs.open_input_file(self.path(*parts))
