"""The resource rule: every trial, worker, driver and Ray Data task fits, from 2 CPUs to GPU clusters."""

import pytest

from rnn_models.errors import UserError
from rnn_models.resources import DATA_CPUS, MIN_CPUS_PER_WORKER, READ_CPUS, plan_resources


def _used_cpus(plan):
    """CPUs the trials running at once hold (their drivers hold none)."""
    return plan.concurrent_trials * plan.workers * plan.cpus_per_worker


def test_one_trial_on_two_cpus_trains_with_one_thread():
    plan = plan_resources(1, cpus=2, gpus=0)
    assert (plan.cpus_per_worker, plan.torch_threads) == (1.0, 1)  # the other CPU is Ray Data's


def test_two_cpus_run_four_trials_at_once_and_leave_a_whole_cpu_for_ray_data():
    plan = plan_resources(4, cpus=2, gpus=0)
    assert (plan.workers, plan.concurrent_trials, plan.gpus_per_worker, plan.torch_threads) == (1, 4, 0, 1)
    assert plan.cpus_per_worker >= MIN_CPUS_PER_WORKER
    assert 2 - _used_cpus(plan) >= DATA_CPUS - 1e-9


def test_big_cpu_machine_gives_whole_threads():
    plan = plan_resources(4, cpus=16, gpus=0)
    assert plan.concurrent_trials == 4 and plan.torch_threads == 4  # 3.74 CPUs, rounded
    assert 16 - _used_cpus(plan) >= DATA_CPUS - 1e-9


def test_two_workers_per_trial_on_two_cpus_queue_trials_instead_of_deadlocking():
    plan = plan_resources(4, cpus=2, gpus=0, workers=2)
    assert plan.workers == 2 and plan.concurrent_trials == 2
    assert 2 - _used_cpus(plan) >= DATA_CPUS - 1e-9


def test_one_gpu_is_shared_by_four_single_worker_trials():
    plan = plan_resources(4, cpus=16, gpus=1)
    assert (plan.workers, plan.gpus_per_worker, plan.concurrent_trials) == (1, 0.25, 4)


def test_trials_sharing_several_gpus_get_shares_that_fit_on_one():
    plan = plan_resources(4, cpus=32, gpus=3)
    assert (plan.gpus_per_worker, plan.concurrent_trials) == (0.5, 4)  # 2 + 1 + 1 trials on the three GPUs


def test_trials_spread_over_gpus_and_workers_never_share_one():
    plan = plan_resources(4, cpus=64, gpus=8, cpus_per_gpu=8)
    assert (plan.workers, plan.gpus_per_worker, plan.concurrent_trials) == (2, 1.0, 4)
    assert plan.cpus_per_worker <= 8
    plan = plan_resources(4, cpus=64, gpus=4, workers=2, cpus_per_gpu=12)
    assert (plan.gpus_per_worker, plan.concurrent_trials) == (1.0, 2)


def test_no_worker_asks_for_more_cpus_than_the_largest_node_has():
    plan = plan_resources(1, cpus=2 * 8, gpus=0, node_cpus=(8, 8))  # two 8-CPU nodes, one trial
    assert plan.cpus_per_worker == 8 and plan.torch_threads == 8


@pytest.mark.parametrize(
    "node_cpus, workers, expected",
    [
        ((2, 2), 2, 1.5),  # the 0-CPU head's cluster: half a CPU left on each node, enough for a read task
        (
            (3, 3, 3),
            4,
            1.5,
        ),  # 2 CPUs each would fit only three workers (one per node): the trial would never start
        ((1.2,) * 5, 5, 0.95),  # one worker per node at 1 CPU would leave 0.2 on each: no read task could run
    ],
)
def test_workers_fit_on_the_nodes_and_leave_room_for_a_read_task_on_one(node_cpus, workers, expected):
    plan = plan_resources(1, cpus=sum(node_cpus), gpus=0, workers=workers, node_cpus=node_cpus)
    assert plan.cpus_per_worker == expected
    rooms = [int(c // plan.cpus_per_worker) for c in node_cpus]
    assert sum(rooms) >= workers
    assert (
        sum(rooms) > workers
        or max(c - n * plan.cpus_per_worker for c, n in zip(node_cpus, rooms)) >= READ_CPUS
    )


def test_cpus_per_worker_stay_beside_their_gpu():
    plan = plan_resources(4, cpus=8 + 48, gpus=4, cpus_per_gpu=12)  # CPU head + one 4-GPU node
    assert plan.cpus_per_worker == 12 and plan.gpus_per_worker == 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(cpus=2, gpus=0, workers=8), "--workers-per-trial 8 needs at least"),
        (dict(cpus=16, gpus=2, workers=4), "--workers-per-trial 4 needs 4 GPUs"),
        (dict(cpus=16, gpus=0, use_gpu="yes"), "--use-gpu yes, but the Ray cluster has no GPU"),
    ],
)
def test_impossible_requests_fail_fast(kwargs, message):
    with pytest.raises(UserError, match=message):
        plan_resources(4, **kwargs)


def test_use_gpu_no_ignores_gpus():
    assert plan_resources(4, cpus=16, gpus=4, use_gpu="no").gpus_per_worker == 0


def test_many_trials_queue_instead_of_failing():
    plan = plan_resources(100, cpus=2, gpus=0)  # e.g. `tune --num-samples 25` on two cores
    assert plan.concurrent_trials == 4 and 2 - _used_cpus(plan) >= DATA_CPUS - 1e-9


def test_a_gpu_is_shared_by_at_most_ten_trials():
    plan = plan_resources(32, cpus=16, gpus=1)
    assert plan.concurrent_trials == 10 and plan.gpus_per_worker == pytest.approx(0.1)
