"""What the cluster's autoscaler, if any, says: that it runs, which node types it may still add, and what it is
launching now. The rules that depend on it (node-local storage refused, GPUs awaited, waits bounded) read it
here, whoever started the cluster (`ray up`, KubeRay, any `ray start --autoscaling-config`).

Ray has no single API for this; three sources, each read if present:
- Autoscaler v1 (what `cluster.yaml` pins; KubeRay's `autoscalerOptions.version` chooses): its monitor writes a status
  report to the GCS every few seconds (what `ray status` prints): the nodes it is launching and setting up, by
  type, and the types whose launches failed.
- Autoscaler v2 (`ray up`'s default since Ray 2.50): a flag in the GCS says it runs; `get_cluster_status`
  gives its pending and failed launches by type.
- `ray up` leaves its config on the head (`~/ray_bootstrap_config.yaml`): the node types and their resources.
  Neither autoscaler publishes its node types (Ray 2.60 defines a GCS record for them that nothing writes), so
  elsewhere (KubeRay) they are not known.
A head started without an autoscaling config (a local Ray, a plain `ray start --head`) runs an autoscaler too,
over a read-only provider that adds nothing; it does not count.
"""

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
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
        parts += [
            f"{name} unavailable ({why or 'its last launch failed'})"
            for name, why in sorted(self.unavailable.items())
        ]
        return (
            f" (the autoscaler: {'; '.join(parts)})"
            if parts
            else " (the autoscaler launched no node for them)"
        )


def autoscaler(bootstrap_config: str = BOOTSTRAP_CONFIG) -> Autoscaler:
    """The connected cluster's autoscaler, as the sources above describe it. A source that cannot be read (the
    GCS busy, a file not YAML) counts as absent: the caller asks again, or decides on what the others say."""
    v1, v2, types = (
        _guarded(_v1_state),
        _guarded(_v2_state),
        _guarded(lambda: _bootstrap_types(bootstrap_config)),
    )
    launching, unavailable = {}, {}
    for state in (v1, v2):
        for node_type, count in (state or {}).get("launching", {}).items():
            launching[node_type] = launching.get(node_type, 0) + count
        unavailable.update((state or {}).get("unavailable", {}))
    return Autoscaler(bool(v1 or v2 or types is not None), types, launching, unavailable)


def _guarded(read):
    try:
        return read()
    except Exception as e:  # noqa: BLE001 (any failure of one source: that source is absent this time)
        log.debug("autoscaler state unavailable from %s: %s", getattr(read, "__name__", "a source"), e)
        return None


def _v1_state() -> dict | None:
    """v1's last report (None where no v1 autoscaler reports, or it stopped): nodes being launched or set up
    by type, and the types whose last launch failed."""
    from ray._private.ray_constants import DEBUG_AUTOSCALING_STATUS
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(DEBUG_AUTOSCALING_STATUS)
    status = json.loads(raw) if raw else {}
    report = status.get("autoscaler_report") or {}
    if time.time() - status.get("time", 0) > REPORT_MAX_AGE_S or _read_only(
        report.get("node_type_mapping") or {}
    ):
        return None
    launching = dict(report.get("pending_launches") or {})
    for node in report.get("pending_nodes") or []:  # (ip, type, status): launched, not yet up
        launching[node[-2]] = launching.get(node[-2], 0) + 1
    availability = (report.get("node_availability_summary") or {}).get("node_availabilities") or {}
    unavailable = {
        node_type: (record.get("unavailable_node_information") or {}).get("description", "")
        for node_type, record in availability.items()
        if not record.get("is_available", True)
    }
    return {"launching": launching, "unavailable": unavailable}


def _read_only(node_types: dict[str, str]) -> bool:
    """A head started without an autoscaling config (a local Ray, a plain `ray start --head`) still runs an
    autoscaler, over a read-only provider that adds nothing: it gives each node a type of its own, named for it.
    `node_types`: node id -> type."""
    from ray.autoscaler._private.util import format_readonly_node_type

    return all(node_type == format_readonly_node_type(node_id) for node_id, node_type in node_types.items())


def _v2_state() -> dict | None:
    """v2's state (None where the cluster runs no v2 autoscaler, or a read-only one): its pending launches and
    nodes by type, and the types of launches that failed."""
    from ray.autoscaler.v2.sdk import get_cluster_status
    from ray.autoscaler.v2.utils import is_autoscaler_v2

    if not is_autoscaler_v2(fetch_from_server=True):
        return None
    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    nodes = status.active_nodes + status.idle_nodes + status.pending_nodes
    if _read_only({node.node_id: node.ray_node_type_name for node in nodes if node.node_id}):
        return None
    launching: dict[str, int] = {}
    for launch in status.pending_launches:
        launching[launch.ray_node_type_name] = launching.get(launch.ray_node_type_name, 0) + launch.count
    for node in status.pending_nodes:
        launching[node.ray_node_type_name] = launching.get(node.ray_node_type_name, 0) + 1
    unavailable = {launch.ray_node_type_name: launch.details or "" for launch in status.failed_launches}
    return {"launching": launching, "unavailable": unavailable}


def _bootstrap_types(path: str) -> dict[str, dict] | None:
    """The node types `ray up`'s config lets the autoscaler add (max_workers above 0), with their resources."""
    config_path = Path(path).expanduser()
    if not config_path.is_file():
        return None
    config = yaml.safe_load(config_path.read_text()) or {}
    types = config.get("available_node_types") or {}
    return {
        name: dict(spec.get("resources") or {})
        for name, spec in types.items()
        if name != config.get("head_node_type") and spec.get("max_workers", config.get("max_workers", 0))
    }
