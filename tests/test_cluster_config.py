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
    cluster["available_node_types"]["gpu_1"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_config(prepare_config(cluster))


def _smallest_cluster(cluster):
    """The head plus every node type's `min_workers`: what `ray up` starts before any autoscaling."""
    types = cluster["available_node_types"]
    counts = {name: spec.get("min_workers", 0) for name, spec in types.items()}
    counts[cluster["head_node_type"]] = 1
    total = lambda key: sum(types[t]["resources"].get(key, 0) * n for t, n in counts.items())
    gpu_nodes = [types[t]["resources"] for t, n in counts.items() if n and types[t]["resources"].get("GPU")]
    return total("CPU"), total("GPU"), min(r["CPU"] / r["GPU"] for r in gpu_nodes)


def test_four_trials_run_at_once_with_the_default_settings(cluster):
    cpus, gpus, cpus_per_gpu = _smallest_cluster(cluster)
    plan = plan_resources(4, cpus, gpus, cpus_per_gpu=cpus_per_gpu)
    assert plan.concurrent_trials == 4 and plan.gpus_per_worker > 0
    gpu_node = cluster["available_node_types"]["gpu_1"]["resources"]
    assert 4 * plan.cpus_per_worker <= gpu_node["CPU"] and 4 * plan.gpus_per_worker <= gpu_node["GPU"]


def test_the_dashboard_is_not_opened_to_the_network(cluster):
    ports = [p["FromPort"] for p in cluster["provider"]["security_group"]["IpPermissions"]]
    assert ports == [22]
    assert all("--dashboard-host=127.0.0.1" in c for c in cluster["head_start_ray_commands"] if "ray start" in c)
