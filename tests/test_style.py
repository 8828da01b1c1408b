"""One style for the whole repository: `ruff format` (110 columns) and `ruff check` (pyflakes, sorted imports,
pycodestyle's errors), as configured in pyproject.toml. Run `ruff format . && ruff check --fix .` to comply."""

import subprocess
import sys

import pytest

from conftest import REPO


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]])
def test_the_repository_follows_ruff(command):
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
