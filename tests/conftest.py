"""Shared fixtures: the real IMDB copy, a small review corpus, and one Ray instance for the whole session."""

import contextlib
import os
import random
import socket
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # readable CI logs


def ray_temp_dir() -> Path:
    """Where Ray keeps its sessions and `ray_current_cluster` on this machine ($RAY_TMPDIR/ray, else /tmp/ray)."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir(), "ray").resolve()


def forget_head(port: int) -> None:
    """Remove the address `ray start --head` on `port` left in ray_current_cluster, as `ray stop` does, so that
    a later `ray.init()` without an address does not try to join the stopped head."""
    address_file = ray_temp_dir() / "ray_current_cluster"
    try:
        if address_file.read_text().strip().endswith(f":{port}"):
            address_file.unlink()
    except OSError:
        pass


@pytest.fixture(scope="session")
def imdb_path() -> Path:
    """The real IMDB dataset (Hugging Face parquet layout); `.ci/run` sets RNN_MODELS_IMDB."""
    path = Path(os.environ.get("RNN_MODELS_IMDB", REPO.parent / "shared" / "data" / "imdb"))
    assert (path / "plain_text").is_dir(), f"IMDB copy not found at {path}: set RNN_MODELS_IMDB"
    return path


def free_port() -> int:
    """A free port below Linux's ephemeral range (32768+), where the ports that Ray's own processes bind at
    random are drawn: one the kernel hands out (port 0) could be taken by one of them before our process binds
    it (a dashboard then failed to start: "address already in use")."""
    for _ in range(100):
        port = random.randrange(20000, 32000)
        if port in _GIVEN:  # not yet bound by whoever asked for it: never hand it out twice
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


_GIVEN: set[int] = set()


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns something true (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def fails(capsys, *argv) -> str:
    """Run the CLI with `argv`, expecting a user error: exit 2, one paragraph on stderr, no traceback."""
    from rnn_models.cli import main

    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


class _Holder:
    def ready(self) -> bool:
        return True


@contextlib.contextmanager
def cpus_held(ray, cpus: float):
    """An actor holding `cpus` CPUs of the running Ray for the block, as another job's (or Train's workers) would."""
    holder = ray.remote(num_cpus=cpus)(_Holder).remote()
    ray.get(holder.ready.remote())
    try:
        yield
    finally:
        ray.kill(holder)


def start_ray():
    """A real local Ray instance (2 CPUs, no dashboard), started once and shared by the tests that need
    one; a test that needs the machine to itself may shut it down, and the next one starts it again."""
    import ray

    if not ray.is_initialized():
        # Workers import test modules, and the benchmark's beside the package (jobs/benchmarks/), too: functions
        # handed to Ray Train are pickled by reference;
        # the dashboard serves Ray's state API, which the fault tests use to find worker processes.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            dashboard_port=free_port(),
            log_to_driver=False,
            runtime_env={
                "env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "jobs")])}
            },
        )
    return ray


def pytest_collection_modifyitems(config, items):
    """Tests marked `own_ray` stop the shared Ray (for a cluster or a Ray of their own): they run after all the
    others, so that the shared Ray starts once, not again after each of them (a start is seconds here)."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is not None)  # a stable sort: order kept


def pytest_sessionfinish(session, exitstatus):
    import ray

    ray.shutdown()


@pytest.fixture
def ray_session():
    return start_ray()


@pytest.fixture(scope="session")
def imdb_sample(imdb_path, tmp_path_factory):
    """A few hundred real IMDB reviews, prepared: 240 train, 60 val, 300 test."""
    from rnn_models.config import PrepareConfig
    from rnn_models.data.prepare import prepare

    start_ray()
    out = tmp_path_factory.mktemp("imdb") / "sample"
    return prepare(PrepareConfig(source=str(imdb_path), out=str(out), max_reviews_per_split=300, val_size=60))


@pytest.fixture(scope="session")
def imdb_medium(imdb_path, tmp_path_factory):
    """2,500 real reviews per split at 128 tokens: epochs long enough (seconds) to interrupt mid-way."""
    from rnn_models.config import PrepareConfig
    from rnn_models.data.prepare import prepare

    start_ray()
    out = tmp_path_factory.mktemp("imdb") / "medium"
    return prepare(
        PrepareConfig(
            source=str(imdb_path), out=str(out), max_reviews_per_split=2500, val_size=200, max_len=128
        )
    )


def build_model(arch: str, vocab_size: int, max_len: int, seed: int | None = None, **options):
    """`arch` with ModelConfig's `options`, for K = `vocab_size` tokens and rows of `max_len` ids, as the job
    builds it (`model_from_config`); the same `seed` gives the same initial weights."""
    from rnn_models.config import ModelConfig
    from rnn_models.models import model_from_config

    return model_from_config(ModelConfig(arch=arch, **options), vocab_size, max_len, seed)


def assert_predictions_of_every_review(checkpoint: Path, result: dict) -> None:
    """The tested checkpoint keeps each test review's prediction once, in the order of their keys, and they
    score the reported accuracy."""
    import pyarrow.parquet as pq

    table = pq.read_table(checkpoint / "test_predictions.parquet")
    assert table.schema.metadata[b"review_key"] == b"source_order"  # keyed as the test shards
    table = table.to_pydict()
    assert table["review"] == sorted(set(table["review"])) and len(table["review"]) == result["test_reviews"]
    right = [(logit > 0) == (label == 1) for logit, label in zip(table["logit"], table["label"])]
    assert sum(right) / len(right) == pytest.approx(result["test_accuracy"])
