"""Connecting to Ray: an existing cluster when one is named, else a local one on loopback."""

import logging
import os
import signal
import threading

import ray

log = logging.getLogger(__name__)
# A local instance's object store: IMDB's prepared splits are ~7-80 MB, and Ray's default (30 % of memory)
# maps gigabytes a laptop needs elsewhere. Ignored when joining a running cluster.
LOCAL_OBJECT_STORE_BYTES = 2 * 1024**3


def connect(address: str | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS; "auto" finds one `ray start` runs on this machine);
    with none, start a local Ray instance, even if a `ray start` head runs here or left its address behind.

    A local instance binds its dashboard to 127.0.0.1 only: reach a remote one through an SSH tunnel or
    `ray dashboard cluster.yaml`, never an open port.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # No resource arguments when joining: the cluster owns them (ray.init refuses them then).
    if address:
        context = ray.init(address=address)
    else:
        context = ray.init(address="local", dashboard_host="127.0.0.1",
                           object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    resources = ray.cluster_resources()
    log.info("Ray cluster %s: %g CPUs, %g GPUs; dashboard %s", context.address_info.get("gcs_address", ""),
             resources.get("CPU", 0), resources.get("GPU", 0), context.dashboard_url or "off")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # after ray.init, which installs its own


def _stop_like_ctrl_c(signum, frame):
    """SIGTERM (a scheduler, `kill`) stops like Ctrl-C: Ray Tune saves the run's state one last time
    (elsewhere Python raises KeyboardInterrupt), so that `--resume` continues it."""
    os.kill(os.getpid(), signal.SIGINT)
