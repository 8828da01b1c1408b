"""cluster.yaml passes the Ray cluster launcher's own validation and fits four concurrent trials."""

import copy

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from conftest import REPO
from rnn_models.resources import plan_resources


@pytest.fixture
def cluster():
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


def test_cluster_yaml_passes_the_launchers_validation(cluster):
    validate_config(prepare_config(copy.deepcopy(cluster)))  # the schema ray/autoscaler/ray-schema.json


def test_the_validation_does_reject_a_broken_config(cluster):
    cluster["available_node_types"]["gpu_spot"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_config(prepare_config(cluster))


def _cluster_with(cluster, workers: dict[str, int]):
    """CPUs, GPUs and the GPU nodes' CPU:GPU ratio of the head plus `workers` ({node type: count})."""
    types = cluster["available_node_types"]
    counts = {**workers, cluster["head_node_type"]: 1}
    total = lambda key: sum(types[t]["resources"].get(key, 0) * n for t, n in counts.items())
    gpu_nodes = [types[t]["resources"] for t, n in counts.items() if n and types[t]["resources"].get("GPU")]
    return total("CPU"), total("GPU"), min(r["CPU"] / r["GPU"] for r in gpu_nodes)


@pytest.mark.parametrize("gpu_type", ["gpu_spot", "gpu_on_demand"])
def test_four_trials_run_at_once_on_one_gpu_node(cluster, gpu_type):
    # GPU workers scale from zero (min_workers 0): the job asks the autoscaler for a GPU and waits for the
    # node, so what it sizes the trials for is the head plus one GPU node, spot or its on-demand fallback.
    assert cluster["available_node_types"][gpu_type]["min_workers"] == 0
    cpus, gpus, cpus_per_gpu = _cluster_with(cluster, {gpu_type: 1})
    plan = plan_resources(4, cpus, gpus, cpus_per_gpu=cpus_per_gpu)
    assert plan.concurrent_trials == 4 and plan.gpus_per_worker > 0
    gpu_node = cluster["available_node_types"][gpu_type]["resources"]
    assert 4 * plan.cpus_per_worker <= gpu_node["CPU"] and 4 * plan.gpus_per_worker <= gpu_node["GPU"]


def test_the_on_demand_gpu_type_is_the_spot_type_without_spot(cluster):
    # Same resources and node: Ray's scheduler scores both alike for any demand, so only a failed spot launch
    # (rnn_models.spot_fallback, tests/test_spot_fallback.py) sends demand to the on-demand type.
    types = cluster["available_node_types"]
    spot, on_demand = types["gpu_spot"], types["gpu_on_demand"]
    assert spot["node_config"].pop("InstanceMarketOptions") == {"MarketType": "spot"}
    assert "InstanceMarketOptions" not in on_demand["node_config"]
    assert spot == on_demand
    # Either type may fill the cluster's max_workers (GPU nodes, both types together): on-demand replaces spot.
    assert spot["max_workers"] == cluster["max_workers"] == 2


def test_every_node_requires_imdsv2(cluster):
    # The head's launch policy refuses a worker without it (tests/test_cluster_launch.py).
    for node_type in cluster["available_node_types"].values():
        assert node_type["node_config"]["MetadataOptions"]["HttpTokens"] == "required"


def test_the_head_has_cpus_for_the_trial_drivers_and_no_gpu(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]["resources"]
    assert head.get("GPU", 0) == 0 and head["CPU"] >= 4


def test_the_dashboard_is_not_opened_to_the_network(cluster):
    # Ray creates no security group (its own would open SSH to 0.0.0.0/0): every node type names the SSH-only
    # group of rnn_models/aws.py, whose rules tests/test_cluster_launch.py reads back from an EC2 emulator.
    assert "security_group" not in cluster["provider"]
    groups = [t["node_config"]["SecurityGroupIds"] for t in cluster["available_node_types"].values()]
    assert all(g == groups[0] and len(g) == 1 for g in groups)
    assert all(
        "--dashboard-host=127.0.0.1" in c for c in cluster["head_start_ray_commands"] if "ray start" in c
    )


def test_every_node_starts_ray_with_token_auth(cluster):
    starts = [
        c
        for c in cluster["head_start_ray_commands"] + cluster["worker_start_ray_commands"]
        if "ray start" in c
    ]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ") for c in starts)
