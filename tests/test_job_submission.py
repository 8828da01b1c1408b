"""The `ray job submit` flow the README shows, on a real head node on loopback."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cluster_harness import session_pids
from conftest import REPO, forget_head, free_port, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]  # a Ray cluster of its own: a minute or more

RAY = str(Path(sys.executable).parent / "ray")
RUNTIME_ENV = {"py_modules": ["rnn_models"]}  # as the README: workers on any node import the uploaded package


def _ray(*args: str, timeout: float, env: dict) -> subprocess.CompletedProcess:
    """Run the `ray` CLI from the repository root, colour codes stripped from what it prints."""
    done = subprocess.run([RAY, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    done.stdout, done.stderr = (re.sub(r"\x1b\[[0-9;]*m", "", text) for text in (done.stdout, done.stderr))
    return done


def _head_is_up(address: str, env: dict, head: subprocess.Popen) -> bool:
    assert head.poll() is None, "ray start --head exited"
    return _ray("job", "list", "--address", address, timeout=60, env=env).returncode == 0


@pytest.fixture(scope="module")
def head():
    """`ray start --head` on loopback with 2 CPUs, token authentication on, as a user's cluster; its job API
    address and the environment to run the `ray` CLI in."""
    import ray

    ray.shutdown()  # the head below is the only Ray on the machine, as on a cluster
    port, dashboard = free_port(), free_port()
    address, env = (
        f"http://127.0.0.1:{dashboard}",
        {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""},
    )
    process = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={free_port()}",  # not Ray's fixed default, which another Ray may hold
            f"--metrics-export-port={free_port()}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: _head_is_up(address, env, process), 120, f"the head at {address} to come up", interval=1
        )
        yield address, env
    finally:  # stop the head this module started, and only it: every process of its session (Ray's workers too)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=3)  # a test head holds nothing worth a graceful stop (that took 30 s)
        except subprocess.TimeoutExpired:
            pass
        wait_for(lambda: not _kill_all(session_pids(process.pid)), 30, "the head's processes to end")
        process.wait(timeout=10)
        forget_head(port)


def _kill_all(pids: list[int]) -> list[int]:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _submit(
    address: str, env: dict, job: str, *entrypoint: str, wait: bool = True
) -> subprocess.CompletedProcess:
    return _ray(
        "job",
        "submit",
        "--address",
        address,
        "--submission-id",
        job,
        *([] if wait else ["--no-wait"]),
        "--working-dir",
        ".",
        "--runtime-env-json",
        json.dumps(RUNTIME_ENV),
        "--",
        *entrypoint,
        timeout=600,
        env=env,
    )


def test_the_main_job_submitted_stopped_and_resubmitted_finishes_where_it_stopped(head, imdb_path, tmp_path):
    """`ray job submit` of the main job as the README shows it (preparing its data from --source), stopped with
    `ray job stop` (SIGTERM, then SIGKILL 3 s later) once mlp has finished and bilstm is mid-way; a second job
    with --resume reuses the data, keeps mlp as it was and continues bilstm from its last checkpoint, each epoch
    once, and prints what a user reads. (One story for both: each job costs a run's start-up.)"""
    from test_faults import (
        _finished,
        assert_resumed_to_the_end,
        checkpoint_epochs,
        checkpoints,
        interrupted_run_args,
        reported_epochs,
    )

    address, env = head
    run_dir, epochs, data = tmp_path / "runs" / "stopped", 6, tmp_path / "data"
    args = interrupted_run_args(str(data), tmp_path / "preset.json", run_dir, epochs)[1:]  # without `train`
    source = [
        "--source",
        str(imdb_path),
        "--max-reviews-per-split",
        "2500",
        "--val-size",
        "200",
        "--max-len",
        "128",
    ]
    main_job = ["python", "jobs/train_all.py", *source, *args]
    first = f"rnn-models-stop-{uuid.uuid4().hex[:8]}"
    assert _submit(address, env, first, *main_job, wait=False).returncode == 0
    wait_for(
        lambda: _finished(run_dir, "mlp") and reported_epochs(run_dir, "bilstm"),
        400,
        "mlp done, bilstm epoch 1",
    )
    stopped = _ray("job", "stop", "--address", address, first, timeout=120, env=env)
    assert stopped.returncode == 0 and f"Job '{first}' was stopped" in stopped.stdout, (
        stopped.stdout + stopped.stderr
    )
    mlp_checkpoints, done = checkpoints(run_dir, "mlp"), max(checkpoint_epochs(run_dir, "bilstm"))
    assert done < epochs - 1, f"bilstm reached epoch {done} before the stop took effect: nothing left to test"
    manifest = data / "manifest.json"
    prepared_at = manifest.stat().st_mtime_ns

    started, second = time.time(), f"rnn-models-resume-{uuid.uuid4().hex[:8]}"
    resubmitted = _submit(address, env, second, *main_job, "--resume")
    assert resubmitted.returncode == 0, resubmitted.stdout[-3000:] + resubmitted.stderr[-3000:]
    status = _ray("job", "status", "--address", address, second, timeout=60, env=env)
    assert f"Job '{second}' succeeded" in status.stdout  # how `ray job status` says SUCCEEDED
    assert_resumed_to_the_end(run_dir, epochs, started, done, mlp_checkpoints)
    assert manifest.stat().st_mtime_ns == prepared_at  # prepared once: the second job reused it
    logs = _ray("job", "logs", "--address", address, second, timeout=60, env=env).stdout
    assert "| mlp |" in logs and "| bilstm |" in logs  # the table: the kept trial's row too
    assert f"bilstm epoch {epochs}/{epochs}: train accuracy" in logs  # a progress line per epoch
    assert "deprecat" not in logs.lower() and len(logs.splitlines()) <= 150, logs  # Ray's logs: --verbose
    results = json.loads((run_dir / "results.json").read_text())["results"]
    assert all(r["test_reviews"] == 2500 for r in results.values())
