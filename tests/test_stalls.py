"""No silent hang: a run that Ray can never schedule stops within --schedule-timeout with an error naming
what waited and what the nodes hold; `--resume` is the way on."""

import time

import pytest

from conftest import cpus_held, fails

pytestmark = pytest.mark.slow  # a real Tune run on the shared local Ray


def test_a_worker_group_that_never_fits_stops_the_run_with_a_clear_error(ray_session, imdb_sample, tmp_path, capsys):
    started = time.monotonic()
    with cpus_held(ray_session, 1.5):  # another job's actor: the plan counts the node's 2 CPUs
        err = fails(capsys, "train", "--data", imdb_sample.root, "--storage", str(tmp_path), "--name", "stalled",
                    "--archs", "mlp", "--epochs", "1", "--schedule-timeout", "10")
    took = time.monotonic() - started
    assert "a worker group of 1 x {CPU: 1}" in err and "waited 10 s (--schedule-timeout)" in err, err
    assert "CPU 1.5/2 used" in err and "--name stalled" in err and "--resume" in err
    print(f"stall stopped the run {took:.0f} s after the start; the error:\n{err}")
    assert took < 120, f"stopped {took:.0f} s after the start"


def test_a_prepare_that_never_fits_stops_with_a_clear_error_and_writes_nothing(ray_session, tmp_path, capsys):
    import corpus

    source, out = corpus.write_hf_parquet(tmp_path / "hf"), tmp_path / "prepared"
    started = time.monotonic()
    with cpus_held(ray_session, 1.5):  # the read tasks ask for a whole CPU of this node
        err = fails(capsys, "prepare", "--source", str(source), "--out", str(out), "--val-size", "2",
                    "--schedule-timeout", "10")
    took = time.monotonic() - started
    assert "1 x {CPU: 1}" in err and "waited 10 s (--schedule-timeout)" in err and "prepare again" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary left
    assert took < 60, f"stopped {took:.0f} s after the start"
