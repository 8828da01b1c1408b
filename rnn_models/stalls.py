"""No silent hang: a run whose cluster leaves a task, actor or worker group waiting for resources that never
free stops with an error naming what waits and what the nodes hold, instead of waiting forever.

Ray never raises for a demand that no node can meet while others hold the resources (a Ray Data task of one
whole CPU beside workers that hold all but half a CPU of each node; a worker group while another job holds
the CPUs). `StallWatch` reads the cluster's pending demands from the GCS (what `ray status` shows) every few
seconds; once demand has waited `bound` seconds while nothing moved (what the nodes hold unchanged, no node
launching), it stops the run as Ctrl-C does (Tune saves its state, so `--resume` continues) and keeps the
reason for the error. Nodes an autoscaler launches but never brings up (spot capacity gone, a quota reached)
have a bound of their own, `--worker-wait`: longer, as a cloud node takes minutes to boot and set up.
"""

import logging
import os
import signal
import threading
import time

import ray

from rnn_models.autoscaler import autoscaler

log = logging.getLogger(__name__)
POLL_SECONDS = 5  # at most: a short bound is looked at thrice within it (a 3 s bound stopped runs at 10 s)


class StallWatch:
    """`with StallWatch(bound, launch_bound): ...` stops the block (SIGINT) once a demand has waited `bound` s with
    nothing moving, or `launch_bound` s for nodes an autoscaler launches that never come (spot capacity gone, a
    quota); `reason` then says what waited. A bound of 0 watches nothing."""

    def __init__(self, bound: float, launch_bound: float = 0, poll: float | None = None, stop=None):
        self.bound, self.launch_bound = bound, launch_bound
        self.poll = poll or poll_seconds(bound, launch_bound)
        self.reason: str | None = None
        self._stop_run = stop or _interrupt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def __enter__(self) -> "StallWatch":
        if self.bound or self.launch_bound:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _watch(self) -> None:
        stalled_since, awaited_since, last_nodes, last_demands = None, None, None, None
        while not self._stop.wait(self.poll):
            try:
                demands, nodes = _cluster_demands()
                scaler = autoscaler()
            except Exception as e:  # the GCS busy or restarting: judge on the next look
                log.debug("cluster status unavailable: %s", e)
                continue
            now = time.monotonic()
            # Nothing moved: demand waits, what the nodes hold and what waits unchanged (tasks that start and end
            # change one or the other; so does a node that joins).
            if not demands or nodes != last_nodes or demands != last_demands:
                stalled_since = awaited_since = None
                last_nodes, last_demands = nodes, demands
                continue
            # While the autoscaler launches nodes, or retries a type whose launch failed, the wait is for it:
            # bounded by launch_bound alone, however long a cloud node takes to boot or a launch is retried.
            if scaler.launching or scaler.unavailable:
                stalled_since, awaited_since = None, awaited_since or now - self.poll
                if self.launch_bound and now - awaited_since >= self.launch_bound:
                    return self._stall(
                        f"{'; '.join(demands)} waited {self.launch_bound:g} s (--worker-wait) for "
                        f"nodes the autoscaler did not add{scaler.describe()}"
                    )
                continue
            stalled_since = stalled_since or now - self.poll
            if self.bound and now - stalled_since >= self.bound:
                return self._stall(
                    f"{'; '.join(demands)} waited {self.bound:g} s (--schedule-timeout) for resources "
                    f"no node frees; the nodes: {'; '.join(nodes)}"
                )

    def _stall(self, reason: str) -> None:
        self.reason = reason
        log.error("stopping the run: %s", reason)
        self._stop_run()


def poll_seconds(*bounds: float) -> float:
    """Seconds between looks: POLL_SECONDS, or a third of the shortest bound set (half a second at least)."""
    return min([POLL_SECONDS, *(max(0.5, b / 3) for b in bounds if b)])


def _interrupt() -> None:
    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: Tune saves the run's state and stops


def _cluster_demands() -> tuple[list[str], list[str]]:
    """The pending demands (tasks, actors, placement groups; not `request_resources` asks) and each node's
    resources as "used/total"."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    summary = status.resource_demands
    demands = [
        f"{d.count} x {_shape(d.bundle)} (tasks or actors)"
        for demand in summary.ray_task_actor_demand
        for d in demand.bundles_by_count
    ]
    demands += [
        f"a worker group of {', '.join(f'{d.count} x {_shape(d.bundle)}' for d in demand.bundles_by_count)}"
        for demand in summary.placement_group_demand
    ]
    nodes = []
    for node in status.active_nodes + status.idle_nodes:
        usage = {u.resource_name: u for u in node.resource_usage.usage if u.resource_name in ("CPU", "GPU")}
        held = (
            ", ".join(f"{name} {u.used:g}/{u.total:g} used" for name, u in sorted(usage.items())) or "no CPU"
        )
        nodes.append(f"{node.node_id[:8]} ({held})")
    return demands, nodes


def _shape(bundle: dict) -> str:
    return (
        "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(bundle.items()) if not k.startswith("node:")) + "}"
    )
