"""Run storage: a local folder or any URI pyarrow's filesystems take (file://, s3://, gs://, ...)."""

import uuid
from pathlib import Path

import pyarrow.fs

from rnn_models.errors import UserError


class Storage:
    """The `--storage` root; each run is a folder `<root>/<name>/`."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") if "://" in root else str(Path(root).expanduser().resolve())
        try:
            self.fs, self.base = pyarrow.fs.FileSystem.from_uri(self.root)
        except (pyarrow.ArrowException, ValueError, OSError) as e:
            raise UserError(f"--storage {root}: not a path or URI that pyarrow can open ({e})") from e

    def join(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self._path(*parts)).type != pyarrow.fs.FileType.NotFound

    def check_writable(self) -> None:
        """Fail now, not after hours of training, if results could not be written."""
        probe = self._path(f".write-check-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except (OSError, pyarrow.ArrowException) as e:
            raise UserError(f"--storage {self.root}: cannot write there ({e})") from e

    def write(self, data: bytes, *parts: str) -> str:
        """Write a file whole: to a temporary name first, then renamed, so no reader sees a part of it."""
        final = self._path(*parts)
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        self.fs.move(tmp, final)
        return self.join(*parts)

    def read(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self._path(*parts)) as f:
            return f.read()
