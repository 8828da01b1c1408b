"""The head's autoscaler (Ray 2.60's v1 autoscaler) picks node types with this scorer instead of Ray's default.

cluster.yaml's head starts Ray with `RAY_AUTOSCALER_UTILIZATION_SCORER=rnn_models.spot_fallback.available_first`,
which `ray.autoscaler._private.resource_demand_scheduler.ResourceDemandScheduler` loads. Ray's default scorer is
handed the availability of each node type (`NodeAvailabilitySummary`: the node launcher marks a type unavailable
for 30 minutes after a failed launch, e.g. spot's `InsufficientInstanceCapacity`) but ignores it, so with a spot
and an on-demand type that fit the same demand it would retry the spot type forever.
"""

from ray.autoscaler._private.node_provider_availability_tracker import NodeAvailabilitySummary
from ray.autoscaler._private.resource_demand_scheduler import _default_utilization_scorer


def available_first(
    node_resources: dict,
    resources: list[dict],
    node_type: str,
    *,
    node_availability_summary: NodeAvailabilitySummary,
) -> tuple | None:
    """Ray's default score behind one rule: a type whose last launch failed (within the tracker's 30 minutes)
    ranks below every type whose last launch did not; among failed types, the one that failed longest ago goes
    first (so a spot and an on-demand type that both failed take turns).

    Types with equal scores (the spot and on-demand GPU types) go by Ray's tie rule: `get_nodes_for` sorts
    (score, node_type) pairs in reverse, so the name that sorts last wins (gpu_spot over gpu_on_demand)."""
    score = _default_utilization_scorer(
        node_resources, resources, node_type, node_availability_summary=node_availability_summary
    )
    if score is None:  # the demand does not fit this type
        return None
    record = node_availability_summary.node_availabilities.get(
        node_type
    )  # None: no launch in the last 30 min
    failed_at = record.last_checked_timestamp if record and not record.is_available else None
    return (failed_at is None, -(failed_at or 0), *score)
