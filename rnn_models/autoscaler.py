"""What the cluster's autoscaler, if any, says: that it runs, which node types it may still add, and what it is
launching now. The rules that depend on it (node-local storage refused, GPUs awaited, waits bounded) read it
here, whoever started the cluster (`ray up`, KubeRay, any `ray start --autoscaling-config`).

Ray has no single API for this; three sources, each read if present:
- Autoscaler v1 (`ray up`'s, KubeRay's default): its monitor writes a status report to the GCS every few
  seconds (what `ray status` prints): the nodes it is launching and setting up, by type, and the types whose
  launches failed. It does not list the types it may add. A head started without an autoscaling config runs
  the same monitor over a read-only provider, which adds nothing.
- Autoscaler v2: its node groups (resources, min and max count) in the GCS, and its launches in
  `get_cluster_status`.
- `ray up` leaves its config on the head (`~/ray_bootstrap_config.yaml`): the node types and their resources.
"""

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import ray._private.state
import yaml

log = logging.getLogger(__name__)
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
# v1 writes its report every update (5 s by default); an older one is from a monitor that has stopped.
REPORT_MAX_AGE_S = 300


@dataclass(frozen=True)
class Autoscaler:
    running: bool  # an autoscaler reports to this cluster, or `ray up` configured one
    node_types: dict[str, dict] | None  # the types it may still add -> their resources; None: not known
    launching: dict[str, int] = field(default_factory=dict)  # type -> nodes being launched or set up
    unavailable: dict[str, str] = field(default_factory=dict)  # type -> why its last launch failed

    @property
    def may_add_nodes(self) -> bool:
        return bool(self.node_types) if self.node_types is not None else self.running

    def types_with(self, resource: str) -> list[str] | None:
        """The addable types that carry `resource` (e.g. "GPU"); None where the types are not known."""
        if self.node_types is None:
            return None
        return [name for name, resources in self.node_types.items() if resources.get(resource)]

    def describe(self) -> str:
        """What it is doing, for a message: the types it launches, and why others failed to launch."""
        parts = [f"launching {count} x {name}" for name, count in sorted(self.launching.items())]
        parts += [f"{name} unavailable ({why or 'its last launch failed'})" for name, why in sorted(self.unavailable.items())]
        return f" (the autoscaler: {'; '.join(parts)})" if parts else " (the autoscaler launched no node for them)"


def autoscaler(bootstrap_config: str = BOOTSTRAP_CONFIG) -> Autoscaler:
    """The connected cluster's autoscaler, as the three sources above describe it."""
    report = _v1_report()
    groups, v2_launching = _v2_state()
    types = _bootstrap_types(bootstrap_config)
    if types is None and groups is not None:
        types = groups
    running = report is not None or groups is not None or types is not None
    launching = dict(v2_launching)
    unavailable = {}
    if report:
        for node_type, count in (report.get("pending_launches") or {}).items():
            launching[node_type] = launching.get(node_type, 0) + count
        for node in report.get("pending_nodes") or []:  # (id, ip, type, status): launched, not yet up
            launching[node[-2]] = launching.get(node[-2], 0) + 1
        availability = (report.get("node_availability_summary") or {}).get("node_availabilities") or {}
        unavailable = {node_type: (record.get("unavailable_node_information") or {}).get("description", "")
                       for node_type, record in availability.items() if not record.get("is_available", True)}
    return Autoscaler(running, types, launching, unavailable)


def _v1_report() -> dict | None:
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    if not raw:
        return None
    status = json.loads(raw)
    report = status.get("autoscaler_report") or {}
    if time.time() - status.get("time", 0) > REPORT_MAX_AGE_S or _read_only(report):
        return None
    return report


def _read_only(report: dict) -> bool:
    """A head started without an autoscaling config (a local Ray, a plain `ray start --head`) still runs v1's
    monitor, over a read-only provider that adds nothing: it gives each node a type of its own, named for it."""
    from ray.autoscaler._private.util import format_readonly_node_type

    mapping = report.get("node_type_mapping") or {}
    return all(node_type == format_readonly_node_type(node_id) for node_id, node_type in mapping.items())


def _v2_state() -> tuple[dict[str, dict] | None, dict[str, int]]:
    """v2's addable node groups (None where no v2 autoscaler reported them) and its pending launches."""
    config = ray._private.state.state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None, {}
    groups = {group.name: dict(group.resources) for group in config.node_group_configs
              if group.resources and (group.max_count == -1 or group.max_count > group.min_count)}
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    launching: dict[str, int] = {}
    for launch in status.pending_launches:
        launching[launch.ray_node_type_name] = launching.get(launch.ray_node_type_name, 0) + launch.count
    for node in status.pending_nodes:
        launching[node.ray_node_type_name] = launching.get(node.ray_node_type_name, 0) + 1
    return groups, launching


def _bootstrap_types(path: str) -> dict[str, dict] | None:
    """The node types `ray up`'s config lets the autoscaler add (max_workers above 0), with their resources."""
    config_path = Path(path).expanduser()
    if not config_path.is_file():
        return None
    config = yaml.safe_load(config_path.read_text()) or {}
    return {name: dict(spec.get("resources") or {}) for name, spec in (config.get("available_node_types") or {}).items()
            if name != config.get("head_node_type") and spec.get("max_workers", config.get("max_workers", 0))}
