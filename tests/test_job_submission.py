"""The `ray job submit` flow the README shows, on a real head node on loopback."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import REPO, free_port, wait_for

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


def test_ray_job_submit_runs_the_main_job(ray_session, imdb_path, tmp_path):
    ray_session.shutdown()  # the head below is the only Ray on the machine, as on a cluster
    port, dashboard = free_port(), free_port()
    address, job = f"http://127.0.0.1:{dashboard}", f"rnn-models-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""}
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus=2", f"--port={port}",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        wait_for(lambda: _head_is_up(address, env, head), 120, f"the head at {address} to come up", interval=1)
        submitted = _ray(
            "job", "submit", "--address", address, "--submission-id", job, "--working-dir", ".",
            "--runtime-env-json", json.dumps(RUNTIME_ENV), "--",
            "python", "jobs/train_all.py", "--source", str(imdb_path), "--data", str(tmp_path / "data"),
            "--storage", str(tmp_path / "runs"), "--name", "job", "--archs", "mlp,lstm", "--epochs", "1",
            "--max-reviews-per-split", "200", "--val-size", "40", timeout=600, env=env)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        status = _ray("job", "status", "--address", address, job, timeout=60, env=env)
        assert f"Job '{job}' succeeded" in status.stdout  # how `ray job status` says SUCCEEDED
        logs = _ray("job", "logs", "--address", address, job, timeout=60, env=env).stdout
        assert "| lstm |" in logs and "lstm epoch 1/1: train accuracy" in logs  # a progress line per epoch
        assert "deprecat" not in logs.lower() and len(logs.splitlines()) <= 150, logs  # Ray's logs: --verbose
        results = json.loads((tmp_path / "runs" / "job" / "results.json").read_text())["results"]
        assert set(results) == {"mlp", "lstm"} and all(r["test_reviews"] == 200 for r in results.values())
    finally:  # stop the head this test started, and only it: its whole process group
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        _forget_head(port)


def _forget_head(port: int) -> None:
    """Remove the address `ray start` left in /tmp/ray/ray_current_cluster, as `ray stop` does: otherwise
    a later `ray.init()` without an address would try to join the stopped head."""
    address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if address_file.is_file() and address_file.read_text().strip().endswith(f":{port}"):
        address_file.unlink()
