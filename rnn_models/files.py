"""Writing that never leaves half-written output behind: build in a temporary sibling, then rename."""

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from rnn_models.errors import UserError
from rnn_models.storage import Storage


def sha256_file(path: Path, digest=None) -> str:
    """The SHA-256 of a file; with `digest`, the file is added to that running digest instead."""
    with open(path, "rb") as f:
        return sha256_stream(f, digest)


def sha256_stream(stream, digest=None) -> str:
    """`sha256_file` of an open binary stream (a local file, or a pyarrow one of a bucket's)."""
    digest = digest or hashlib.sha256()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, data) -> None:
    """Write `data` as JSON into a local file whole (`Storage.write`): readers see the old file or the new one."""
    path = Path(path)
    Storage(str(path.parent), option="--out").write((json.dumps(data, indent=2) + "\n").encode(), path.name)


@contextlib.contextmanager
def atomic_directory(target: Path, option: str = "--out"):
    """Yield an empty temporary directory that replaces `target` only if the block completes.

    On any failure (an exception, Ctrl-C) the temporary directory is removed and `target`, if it
    existed, is left exactly as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(target)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
    except OSError as e:
        raise UserError(f"{option} {target}: cannot write there ({e.strerror or e})") from e
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def _remove_orphans(target: Path) -> None:
    """Delete temporaries left by writers of `target` that were killed (their process is gone)."""
    for orphan in target.parent.glob(f".{target.name}.tmp-*-*"):
        pid = orphan.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(orphan, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process
    return True
