"""No silent hang: a run that Ray can never schedule stops within --schedule-timeout with an error naming
what waited and what the nodes hold; `--resume` is the way on."""

import time

import pytest

from conftest import cpus_held, fails, wait_for
from rnn_models import stalls
from rnn_models.autoscaler import Autoscaler


@pytest.mark.slow  # a real Tune run on the shared local Ray
def test_a_worker_group_that_never_fits_stops_the_run_with_a_clear_error(
    ray_session, imdb_sample, tmp_path, capsys
):
    started = time.monotonic()
    with cpus_held(ray_session, 1.5):  # another job's actor: the plan counts the node's 2 CPUs
        err = fails(
            capsys,
            "train",
            "--data",
            imdb_sample.root,
            "--storage",
            str(tmp_path),
            "--name",
            "stalled",
            "--archs",
            "mlp",
            "--epochs",
            "1",
            "--schedule-timeout",
            "3",
        )
    took = time.monotonic() - started
    assert "a worker group of 1 x {CPU: 1}" in err and "waited 3 s (--schedule-timeout)" in err, err
    assert "CPU 1.5/2 used" in err and "--name stalled" in err and "--resume" in err
    print(f"stall stopped the run {took:.0f} s after the start; the error:\n{err}")
    assert took < 120, f"stopped {took:.0f} s after the start"


@pytest.mark.slow
def test_a_prepare_that_never_fits_stops_with_a_clear_error_and_writes_nothing(ray_session, tmp_path, capsys):
    import corpus

    source, out = corpus.write_hf_parquet(tmp_path / "hf"), tmp_path / "prepared"
    started = time.monotonic()
    with cpus_held(ray_session, 1.5):  # the read tasks ask for a whole CPU of this node
        err = fails(
            capsys,
            "prepare",
            "--source",
            str(source),
            "--out",
            str(out),
            "--val-size",
            "2",
            "--schedule-timeout",
            "3",
        )
    took = time.monotonic() - started
    assert "1 x {CPU: 1}" in err and "waited 3 s (--schedule-timeout)" in err and "prepare again" in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary left
    assert took < 60, f"stopped {took:.0f} s after the start"


def _watched(monkeypatch, demands: list[str], scaler: Autoscaler, nodes, **bounds) -> stalls.StallWatch:
    """A StallWatch over a cluster that shows `demands` waiting beside `nodes` (a list, or a function giving it
    at each look) while `scaler` does what it says."""
    monkeypatch.setattr(stalls, "_cluster_demands", lambda: (demands, nodes() if callable(nodes) else nodes))
    monkeypatch.setattr(stalls, "autoscaler", lambda: scaler)
    stopped = []
    watch = stalls.StallWatch(poll=0.05, stop=lambda: stopped.append(time.monotonic()), **bounds)
    watch.stopped = stopped
    return watch


def test_nodes_launched_but_never_up_stop_the_run_after_the_worker_wait(monkeypatch):
    """Spot capacity gone: the autoscaler keeps launching a type whose nodes never come. The stall bound does
    not fire (a launch is movement); the worker-wait bound does, naming the type."""
    scaler = Autoscaler(
        True, None, launching={"gpu_1": 1}, unavailable={"gpu_1": "InsufficientInstanceCapacity"}
    )
    started = time.monotonic()
    with _watched(
        monkeypatch,
        ["a worker group of 2 x {GPU: 1}"],
        scaler,
        ["head (CPU 1/8 used)"],
        bound=0.2,
        launch_bound=1,
    ) as watch:
        wait_for(lambda: watch.stopped, 10, "the watch to stop the run")
    assert 1 <= watch.stopped[0] - started < 3
    assert watch.reason == (
        "a worker group of 2 x {GPU: 1} waited 1 s (--worker-wait) for nodes the autoscaler did "
        "not add (the autoscaler: launching 1 x gpu_1; gpu_1 unavailable "
        "(InsufficientInstanceCapacity))"
    )


def test_demand_with_nothing_launching_stops_at_the_schedule_timeout(monkeypatch):
    with _watched(
        monkeypatch,
        ["1 x {CPU: 1} (tasks or actors)"],
        Autoscaler(False, None),
        ["a (CPU 2/2 used)"],
        bound=0.3,
        launch_bound=60,
    ) as watch:
        wait_for(lambda: watch.stopped, 10, "the watch to stop the run")
    assert watch.reason.startswith("1 x {CPU: 1} (tasks or actors) waited 0.3 s (--schedule-timeout)"), (
        watch.reason
    )


def test_no_demand_never_stops_the_run(monkeypatch):
    with _watched(
        monkeypatch,
        [],
        Autoscaler(True, None, launching={"gpu_1": 2}),
        ["a (CPU 2/2 used)"],
        bound=0.1,
        launch_bound=0.1,
    ) as watch:
        time.sleep(0.6)
    assert not watch.stopped and watch.reason is None


def test_nodes_that_move_keep_the_run_going_whatever_the_autoscaler_says(monkeypatch):
    """A type still marked unavailable (spot failed, on demand came) while the run's tasks start and end: no bound
    fires, since what the nodes hold changes at every look."""
    looks = iter(range(10**6))
    scaler = Autoscaler(True, None, unavailable={"gpu_spot": "InsufficientInstanceCapacity"})
    with _watched(
        monkeypatch,
        ["3 x {CPU: 0.25} (tasks or actors)"],
        scaler,
        lambda: [f"a (CPU {next(looks)}/8)"],
        bound=0.1,
        launch_bound=0.1,
    ) as watch:
        time.sleep(0.6)
    assert not watch.stopped and watch.reason is None


def test_a_short_bound_is_looked_at_thrice_within_it():
    assert stalls.poll_seconds(3, 0) == 1  # --schedule-timeout 3: a stop near 4 s, not 10
    assert stalls.poll_seconds(0.3, 60) == 0.5  # half a second at least
    assert stalls.poll_seconds(600, 900) == stalls.poll_seconds(0, 0) == stalls.POLL_SECONDS
    assert stalls.StallWatch(3, 900).poll == 1 and stalls.StallWatch(1, 0, poll=0.05).poll == 0.05
