"""An autoscaling cluster not started by `ray up` (Ray's fake multi-node provider, scaling a GPU node type from
zero, no bootstrap file on the head), as KubeRay or any autoscaler presents it: the job sees the autoscaler
through Ray alone, refuses node-local storage, asks for a trial's GPUs and waits until all are up, and gives up
with a clear error where the autoscaler cannot add them. The fake GPU nodes have no CUDA: the wait and the
plan are checked, nothing is trained on them. The tests run in file order: the last lets the autoscaler add
the GPU type the others find it may not."""

import subprocess
import sys
import time

import pytest
import ray

from cluster_harness import AutoscalingCluster
from conftest import wait_for
from rnn_models import cluster as cluster_rules
from rnn_models.autoscaler import autoscaler
from rnn_models.errors import UserError
from rnn_models.resources import cluster_plan

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]  # a cluster of its own

GPU_NODE = {"resources": {"CPU": 1, "GPU": 1}, "node_config": {}, "min_workers": 0}


@pytest.fixture(scope="module")
def scaling(tmp_path_factory):
    """The head (1 CPU) and a `gpu_node` type the autoscaler may not add yet (max_workers 0)."""
    ray.shutdown()  # a local Ray another test started: this cluster is the only Ray here
    with AutoscalingCluster(
        {"gpu_node": {**GPU_NODE, "max_workers": 0}}, log_dir=tmp_path_factory.mktemp("autoscaling-logs")
    ) as nodes:
        nodes.connect(log_to_driver=False)
        wait_for(
            lambda: autoscaler(str(nodes.log_dir / "absent.yaml")).running,
            60,
            "the autoscaler's first report",
        )
        yield nodes


def standing_request() -> list[dict]:
    """What `request_resources` asks of this (v1) autoscaler now: the bundles it keeps in the GCS for it."""
    import json

    from ray._private.ray_constants import AUTOSCALER_RESOURCE_REQUEST_CHANNEL
    from ray.experimental.internal_kv import _internal_kv_get

    return json.loads(_internal_kv_get(AUTOSCALER_RESOURCE_REQUEST_CHANNEL) or b"[]")


def test_node_local_storage_is_refused_before_training(scaling, imdb_sample, tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnn_models",
            "train",
            "--data",
            imdb_sample.root,
            "--storage",
            str(tmp_path / "runs"),
            "--archs",
            "mlp",
            "--epochs",
            "1",
            "--address",
            scaling.address,
        ],
        capture_output=True,
        text=True,
        env=scaling.env,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    error = done.stderr[done.stderr.index("error: ") :]
    assert "a folder on this node's disk, but the Ray cluster has an autoscaler that adds nodes" in error, (
        error
    )
    assert len(scaling.alive_nodes()) == 1  # refused before anything asked for a node


def test_gpus_the_autoscaler_cannot_add_end_the_wait_with_a_clear_error(scaling, monkeypatch):
    started = time.monotonic()
    asked, gpus_up = [], cluster_rules._gpus
    monkeypatch.setattr(cluster_rules, "_gpus", lambda: asked.append(standing_request()) or gpus_up())
    with pytest.raises(
        UserError,
        match=r"--use-gpu yes: 0 of the 1 GPU\(s\) a trial needs joined the cluster within "
        r"--gpu-wait 4 s \(the autoscaler launched no node for them\)",
    ):
        cluster_rules.wait_for_gpus(1, timeout=4, use_gpu="yes")
    assert time.monotonic() - started < 30
    assert asked and all(r == [{"GPU": 1}] for r in asked)  # asked for before and while waiting
    assert standing_request() == []  # withdrawn with the error
    # auto: where the autoscaler's node types are unknown, a short wait for a launch, then train on CPUs
    monkeypatch.setattr(cluster_rules, "GPU_LAUNCH_GRACE_SECONDS", 3)
    cluster_rules.wait_for_gpus(1, timeout=60, use_gpu="auto")
    assert standing_request() == [] and len(scaling.alive_nodes()) == 1


def test_a_trial_of_two_gpus_waits_for_both_nodes_and_is_sized_on_them(scaling):
    scaling.set_node_types({"gpu_node": {**GPU_NODE, "max_workers": 2}})  # now the autoscaler may add two
    started = time.monotonic()
    cluster_rules.wait_for_gpus(2, timeout=180, use_gpu="yes")
    took = time.monotonic() - started
    assert ray.cluster_resources().get("GPU") == 2 and len(scaling.alive_nodes()) == 3
    assert standing_request() == [{"GPU": 1}] * 2  # kept until the trials hold their GPUs
    plan = cluster_plan(4, 2, "yes")
    assert (plan.workers, plan.gpus_per_worker) == (2, 1) and plan.concurrent_trials == 1, plan
    cluster_rules.release_gpus()
    assert standing_request() == []
    # A driver killed outright leaves its request standing (nodes kept up, billed): the next run replaces it
    # even with its GPUs already up, and withdraws it at its end.
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * 2)
    cluster_rules.wait_for_gpus(1, timeout=1, use_gpu="auto")
    assert standing_request() == [{"GPU": 1}]
    cluster_rules.release_gpus()
    assert standing_request() == []
    print(f"two GPU nodes up {took:.0f} s after the request; plan: {plan.describe(4)}")
