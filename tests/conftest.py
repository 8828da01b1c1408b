"""Shared fixtures: the real IMDB copy, a small review corpus, and one Ray instance for the whole session."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # readable CI logs


@pytest.fixture(scope="session")
def imdb_path() -> Path:
    """The real IMDB dataset (Hugging Face parquet layout); `.ci/run` sets RNN_MODELS_IMDB."""
    path = Path(os.environ.get("RNN_MODELS_IMDB", REPO.parent / "shared" / "data" / "imdb"))
    assert (path / "plain_text").is_dir(), f"IMDB copy not found at {path}: set RNN_MODELS_IMDB"
    return path


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray instance (2 CPUs, no dashboard), shared by the tests that need one."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
