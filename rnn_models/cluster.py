"""Connecting to Ray: an existing cluster when one is named, else a local one on loopback."""

import logging
import os
import signal
import threading

import ray

log = logging.getLogger(__name__)


def connect(address: str | None = None) -> None:
    """Join the cluster at `address` (or $RAY_ADDRESS); with neither, start a local Ray instance.

    A local instance binds its dashboard to 127.0.0.1 only: reach a remote one through an SSH tunnel or
    `ray dashboard cluster.yaml`, never an open port.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address)  # no resource arguments: the cluster owns them
    else:
        log.info("starting a local Ray instance (dashboard on http://127.0.0.1:8265)")
        ray.init(dashboard_host="127.0.0.1")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # after ray.init, which installs its own


def _stop_like_ctrl_c(signum, frame):
    """SIGTERM (a scheduler, `kill`) stops like Ctrl-C: Ray Tune saves the run's state one last time
    (elsewhere Python raises KeyboardInterrupt), so that `--resume` continues it."""
    os.kill(os.getpid(), signal.SIGINT)
