"""Faults injected into real runs: a killed driver (SIGTERM, then SIGKILL), an interrupted prepare. Each run must
continue or stay intact as the README promises. A killed Train worker and a lost node: test_three_nodes.py (a
worker group of two ranks) and test_two_nodes.py (a lone worker)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import wait_for
from rnn_models.config import PrepareConfig
from rnn_models.data.prepare import prepare
from rnn_models.data.prepared import open_prepared
from rnn_models.tuning.trial import is_final

pytestmark = pytest.mark.slow  # minutes: real training through Ray

CLI = [sys.executable, "-m", "rnn_models"]


def checkpoints(run: Path, arch: str) -> list[Path]:
    """The kept checkpoints of `arch`: in its trial's folder (a lone worker) or its Train run's (a worker group),
    folders only (Train's `checkpoint_manager_snapshot.json` sits beside them)."""
    found = [*run.glob(f"run_trial_*arch={arch}_*/checkpoint_*"), *run.glob(f"train/{arch}-*/checkpoint_*")]
    return sorted(path for path in found if path.is_dir())


def checkpoint_epochs(run: Path, arch: str) -> list[int]:
    """Epochs of the registered checkpoints of `arch` (meta.json is written before registering)."""
    epochs = []
    for checkpoint in checkpoints(run, arch):
        try:
            epochs.append(json.loads((checkpoint / "meta.json").read_text())["epoch"])
        except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):  # being copied in, or deleted
            continue
    return sorted(epochs)


def reported(run: Path, arch: str) -> list[dict]:
    """Every result Tune recorded for `arch`'s trial: one per epoch, the workers' test scores, the trial's result."""
    files = list(run.glob(f"run_trial_*arch={arch}_*/result.json"))
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def reported_epochs(run: Path, arch: str, since: float = 0) -> list[int]:
    """The epochs reported for `arch`, those Tune recorded from time `since` on (one process's reports)."""
    return [r["epoch"] for r in reported(run, arch) if "epoch" in r and r["timestamp"] >= int(since)]


def _start(args: list[str], log: Path, address: str) -> subprocess.Popen:
    """The CLI with `args` in a session of its own, a driver on the Ray at `address`."""
    env = {**os.environ, "RAY_ADDRESS": address}
    return subprocess.Popen(
        [*CLI, *args], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def _reap(group: int, timeout: float = 5) -> None:
    """Wait briefly for the killed CLI's process group to exit (its Ray workers are not in it), then end it."""
    try:
        wait_for(lambda: not _group_alive(group), timeout, "the killed CLI's processes to exit")
    except AssertionError:
        os.killpg(group, signal.SIGKILL)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def resumed_at(epochs_run: list[int], done: int) -> bool:
    """Whether a resumed trial began after the last epoch checkpointed (`done`), or redid that epoch alone: one
    that ended as the driver stopped, before Tune recorded its checkpoint (docs/training.md). Never epoch 1."""
    return max(2, done) <= epochs_run[0] <= done + 1


def _finished(run: Path, arch: str) -> bool:
    return any(is_final(r) for r in reported(run, arch))  # the trial's own final result


def test_a_killed_driver_resumes_where_it_stopped(ray_session, imdb_medium, tmp_path):
    """The epochs each process reported (Tune's timestamps tell them apart) show where it began. The mlp
    trial is short and the bilstm one long (a preset file sets their epochs; a narrow bilstm, seconds an
    epoch), so each kill finds mlp finished and bilstm mid-way. The drivers run on the tests' shared Ray, as
    drivers on a cluster do (a local Ray's start and stop for each of the three took a fifth of this test's
    time): a killed driver's job ends, and Ray ends its trials with it."""
    shared = ray_session.get_runtime_context().gcs_address
    run_dir, epochs = tmp_path / "runs" / "driver-kill", 6
    args = interrupted_run_args(imdb_medium.root, tmp_path / "preset.json", run_dir, epochs)

    # 1. SIGTERM once mlp is done and bilstm reported epoch 1
    first = _start(args, tmp_path / "first.log", shared)
    wait_for(
        lambda: _finished(run_dir, "mlp") and reported_epochs(run_dir, "bilstm"),
        400,
        "mlp done, bilstm epoch 1",
    )
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 130
    assert f"--name {run_dir.name} --resume" in (tmp_path / "first.log").read_text()
    _wait_for_its_trials_to_end(ray_session)
    mlp_checkpoints = checkpoints(run_dir, "mlp")
    done = max(checkpoint_epochs(run_dir, "bilstm"))  # epochs finished while Tune shut down count too
    assert done < epochs - 1, (
        f"bilstm reached epoch {done} before the SIGTERM took effect: nothing left to test"
    )

    started = time.time()
    second = _start([*args, "--resume"], tmp_path / "second.log", shared)  # 2. SIGKILL mid-run
    wait_for(
        lambda: reported_epochs(run_dir, "bilstm", since=started), 400, "the resumed bilstm's first epoch"
    )
    second.kill()  # SIGKILL the driver alone: no handler of its own runs
    second.wait(timeout=60)
    _wait_for_its_trials_to_end(ray_session)
    assert resumed_at(
        reported_epochs(run_dir, "bilstm", since=started), done
    )  # from a checkpoint, not epoch 1
    done = max(checkpoint_epochs(run_dir, "bilstm"))

    started = time.time()
    third = _start([*args, "--resume"], tmp_path / "third.log", shared)  # 3. to the end
    assert third.wait(timeout=600) == 0, (tmp_path / "third.log").read_text()[-3000:]
    assert_resumed_to_the_end(run_dir, epochs, started, done, mlp_checkpoints)


def _wait_for_its_trials_to_end(ray) -> None:
    """Until the stopped driver's trials have ended (Ray ends a dead driver's actors) and given back the shared
    Ray's CPUs: none of them writes a checkpoint after this, and the next driver's trials find room."""
    wait_for(
        lambda: ray.available_resources().get("CPU") == ray.cluster_resources()["CPU"],
        60,
        "the stopped driver's trials to end",
        interval=0.5,
    )


def interrupted_run_args(data: str, preset: Path, run: Path, epochs: int) -> list[str]:
    """`train` arguments of a run to interrupt: a preset (written to `preset`) of mlp for 2 epochs and a narrow
    bilstm for `epochs` (seconds each), so that a run interrupted once mlp is done finds bilstm mid-way."""
    archs = {
        "mlp": {"train": {"epochs": 2}},
        "bilstm": {"model": {"hidden_size": 16}, "train": {"epochs": epochs}},
    }
    preset.write_text(json.dumps({"name": "faults", "train": {"lr": 1e-3}, "archs": archs}))
    where = ["--storage", str(run.parent), "--name", run.name]
    return ["train", "--data", str(data), "--archs", "mlp,bilstm", "--preset", str(preset), *where]


def assert_resumed_to_the_end(run: Path, epochs: int, started: float, done: int, mlp_checkpoints: list[Path]):
    """The run resumed at `started` continued bilstm from its checkpoint of epoch `done` to the end, left the
    finished mlp untouched, and holds each epoch once in bilstm's history."""
    epochs_run = reported_epochs(run, "bilstm", since=started)
    assert resumed_at(epochs_run, done) and epochs_run == list(range(epochs_run[0], epochs + 1)), epochs_run
    results = json.loads((run / "results.json").read_text())["results"]
    assert set(results) == {"mlp", "bilstm"} and results["bilstm"]["epochs"] == epochs
    assert checkpoints(run, "mlp") == mlp_checkpoints  # finished before the interruption: not trained again
    metas = [json.loads((c / "meta.json").read_text()) for c in checkpoints(run, "bilstm")]
    latest = max(metas, key=lambda m: m["epoch"])
    assert [h["epoch"] for h in latest["history"]] == list(range(1, epochs + 1))  # each epoch once


def test_an_interrupted_prepare_leaves_the_previous_output_intact(ray_session, imdb_path, tmp_path):
    """Each `prepare` below runs on the tests' shared Ray: what is tested is its output, not its Ray's fate (a
    local Ray's start and stop were most of this test's time)."""
    out, shared = tmp_path / "prepared", ray_session.get_runtime_context().gcs_address
    before = prepare(
        PrepareConfig(source=str(imdb_path), out=str(out), max_reviews_per_split=100, val_size=10)
    ).manifest
    small = [
        "prepare",
        "--source",
        str(imdb_path),
        "--out",
        str(out),
        "--max-reviews-per-split",
        "100",
        "--val-size",
        "10",
    ]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        full = _start(
            ["prepare", "--source", str(imdb_path), "--out", str(out), "--force"],
            tmp_path / "full.log",
            shared,
        )
        wait_for(lambda: list(tmp_path.glob(".prepared.tmp-*")), 120, "the temporary output")
        time.sleep(1.0)
        full.send_signal(sig)
        full.wait(timeout=60)
        _reap(full.pid)
        assert open_prepared(out).manifest == before, sig  # verified against its own shards too
        leftovers = list(tmp_path.glob(".prepared.tmp-*"))
        assert leftovers == [] if sig == signal.SIGTERM else len(leftovers) == 1

    again = _start([*small, "--max-len", "32"], tmp_path / "again.log", shared)
    assert again.wait(timeout=300) == 0, (tmp_path / "again.log").read_text()[-3000:]
    assert list(tmp_path.glob(".prepared.tmp-*")) == []  # the killed writer's temporary was swept
    assert open_prepared(out).max_len == 32
