"""Connecting to Ray (an existing cluster when one is named, else a local one on loopback) and what the
run needs of the cluster: storage every node reaches, and GPUs an autoscaler may still have to add."""

import atexit
import logging
import os
import signal
import threading
import time

import ray

from rnn_models.autoscaler import BOOTSTRAP_CONFIG, autoscaler
from rnn_models.errors import UserError
from rnn_models.stalls import poll_seconds
from rnn_models.storage import Storage

log = logging.getLogger(__name__)
# A local instance's object store: IMDB's prepared splits are ~7-80 MB, and Ray's default (30 % of memory)
# maps gigabytes a laptop needs elsewhere. Ignored when joining a running cluster.
LOCAL_OBJECT_STORE_BYTES = 2 * 1024**3
# Python processes a local instance's raylet starts at once (Ray's default: one per CPU). A run starts one per
# trial of one worker, four plus one per rank for a trial of several (Tune's trial, its result queue, Train's
# controller and synchronization actor), and Ray Data's; at one per CPU, four trials of five processes on two
# cores made the raylet warn of "13x the maximum expected startup concurrency" eight times a run.
STARTUP_CONCURRENCY = 8


_show_ray_logs = False


def show_ray_logs(verbose: bool) -> None:
    """Ray's own output (its processes' logs, Tune's status table, Data's progress bars, its INFO lines)
    only with `--verbose`; without it the run prints the project's progress lines, warnings and errors."""
    global _show_ray_logs
    _show_ray_logs = verbose
    if verbose:
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")  # inherited by the processes Ray starts
    os.environ.setdefault(
        "RAY_AIR_NEW_OUTPUT", "0"
    )  # Tune's older reporter: silent at verbose=0, the newer one
    # still prints its experiment box
    import ray.data  # noqa: F401  (its import sets its loggers' levels: set them after it)

    for name in ("ray", "ray.data", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Notices of choices made here, nothing for a user to act on: Ray's token authentication is on (the
    # default, kept), Data's progress bars are off (turned off above).
    for name in ("ray._private.authentication.authentication_token_setup", "ray.data._internal.progress"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("ray.data.dataset").addFilter(_no_cpu_free_notice)
    # Tune warns when handling a result takes over 0.5 s; on two cores shared by four trials' processes the
    # wait for a CPU alone takes that long. Slower than 5 s is still worth a warning.
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")


def _no_cpu_free_notice(record: logging.LogRecord) -> bool:
    """Ray Data warns that a pipeline "will hang" when no CPU is free the instant it starts. It fired when a stage
    started just after another's tasks ended, and nothing hung. A run or prepare that really waits is
    --schedule-timeout's to report; --verbose shows the warning."""
    return "does not have any available CPUs" not in record.getMessage()


def verbose() -> bool:
    return _show_ray_logs


def _ray_output() -> dict:
    """`ray.init`'s options for what reaches this console: everything with --verbose, else warnings."""
    return {
        "log_to_driver": _show_ray_logs,
        "logging_level": logging.INFO if _show_ray_logs else logging.WARNING,
    }


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
        context = ray.init(address=address, **_ray_output())
    else:
        context = ray.init(
            address="local",
            dashboard_host="127.0.0.1",
            object_store_memory=LOCAL_OBJECT_STORE_BYTES,
            _system_config={"worker_maximum_startup_concurrency": STARTUP_CONCURRENCY},
            **_ray_output(),
        )
    resources = ray.cluster_resources()
    log.info(
        "Ray cluster %s: %g CPUs, %g GPUs; dashboard %s",
        context.address_info.get("gcs_address", ""),
        resources.get("CPU", 0),
        resources.get("GPU", 0),
        context.dashboard_url or "off",
    )
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_like_ctrl_c)  # after ray.init, which installs its own


def _stop_like_ctrl_c(signum, frame):
    """SIGTERM (a scheduler, `kill`) stops like Ctrl-C: Ray Tune saves the run's state one last time
    (elsewhere Python raises KeyboardInterrupt), so that `--resume` continues it."""
    os.kill(os.getpid(), signal.SIGINT)


# With `--use-gpu auto` on a cluster whose node types are not known (an autoscaler other than `ray up`'s, e.g.
# KubeRay's): how long to wait for the autoscaler to start launching a node for the GPUs asked for, before
# concluding it has no GPU type and training on what is there.
GPU_LAUNCH_GRACE_SECONDS = 60


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def node_resources(node_id: str) -> dict:
    return next((n["Resources"] for n in ray.nodes() if n["NodeID"] == node_id), {})


def on_this_node(cpus: float) -> dict:
    """Ray remote arguments that run a task on this process's node, the only one that sees its disk, asking
    for `cpus`, or for none where the node has fewer (a head of 0 CPUs: the task then runs beside what does)."""
    here = ray.get_runtime_context().get_node_id()
    return {
        "num_cpus": cpus if node_resources(here).get("CPU", 0) >= cpus else 0,
        "label_selector": {"ray.io/node-id": here},
    }


def require_shared_storage(storage: Storage, bootstrap_config: str = BOOTSTRAP_CONFIG) -> None:
    """Refuse a node-local `--storage` on a cluster of several nodes (or one whose autoscaler can add nodes):
    Train workers on other nodes would write their checkpoints to their own disks, and a resumed run or a
    restarted worker would not find them."""
    if not storage.is_local:
        return
    nodes = len(alive_nodes())
    if nodes > 1:
        where = f"{nodes} nodes"
    elif autoscaler(bootstrap_config).may_add_nodes:
        where = "an autoscaler that adds nodes"
    else:
        return
    raise UserError(
        f"--storage {storage.root}: a folder on this node's disk, but the Ray cluster has {where}, "
        "whose workers write checkpoints there too; give storage every node reaches: a bucket "
        "(--storage s3://BUCKET/runs, gs://…) or, for a folder every node mounts at the same path, "
        f"file://{storage.root}"
    )


_gpus_requested = False


def wait_for_gpus(gpus: int, timeout: float, use_gpu: str, bootstrap_config: str = BOOTSTRAP_CONFIG) -> None:
    """With `--use-gpu auto|yes` on an autoscaling cluster that may add GPU nodes, ask the autoscaler for one
    trial's GPUs (the others share or queue) and, while fewer are up, wait (with progress, at most `timeout` s)
    until all have joined, instead of sizing the run from a snapshot that saw too few.

    The request stands until `release_gpus` (the end of the run, or of this process): until the trials hold
    their GPUs, an idle node could otherwise be taken back. It is made even when the GPUs are up, so that the
    run's end also clears one a killed driver left standing. Where the autoscaler's node types are not known
    (KubeRay's), `auto` stops waiting if the autoscaler launches nothing within GPU_LAUNCH_GRACE_SECONDS."""
    global _gpus_requested
    if use_gpu == "no":
        return
    scaler = autoscaler(bootstrap_config)
    gpu_types = scaler.types_with("GPU")
    if not scaler.running or gpu_types == []:
        return  # auto: train on what is there; yes: the plan says what is missing
    from ray.autoscaler.sdk import request_resources

    request_resources(bundles=[{"GPU": 1}] * gpus)
    if not _gpus_requested:
        atexit.register(release_gpus)  # runs before Ray's own shutdown hook (registered at its import)
    _gpus_requested = True
    if _gpus() >= gpus:
        return
    log.info(
        "%g of %d GPU(s) up: asked the autoscaler for them (%s); waiting up to %d s",
        _gpus(),
        gpus,
        f"node types {', '.join(gpu_types)}" if gpu_types else "its node types are not known here",
        timeout,
    )
    try:
        if not _await_gpus(gpus, timeout, use_gpu, bootstrap_config, types_known=gpu_types is not None):
            release_gpus()
    except BaseException:
        release_gpus()
        raise


def _await_gpus(gpus: int, timeout: float, use_gpu: str, bootstrap_config: str, types_known: bool) -> bool:
    """Wait until `gpus` GPUs are up (True), or, for `auto` where nothing was ever launched for them, give up
    (False)."""
    started, next_report, launched = time.monotonic(), 30, False
    while _gpus() < gpus:
        waited = time.monotonic() - started
        scaler = autoscaler(bootstrap_config)
        launched = launched or bool(scaler.launching)
        if waited >= timeout:
            raise UserError(
                f"--use-gpu {use_gpu}: {_gpus():g} of the {gpus} GPU(s) a trial needs joined the "
                f"cluster within --gpu-wait {timeout:g} s{scaler.describe()}; see `ray status` "
                "(or `ray monitor cluster.yaml`) for why, raise --gpu-wait, lower --workers-per-trial, "
                "or train on CPUs with --use-gpu no"
            )
        if use_gpu == "auto" and not types_known and not launched and waited >= GPU_LAUNCH_GRACE_SECONDS:
            log.info(
                "the autoscaler launched no node for the GPU(s) in %.0f s: training on what is there", waited
            )
            return False
        if waited >= next_report:
            log.info(
                "still waiting for GPU nodes: %g of %d up (%.0f s of %g)%s",
                _gpus(),
                gpus,
                waited,
                timeout,
                scaler.describe(),
            )
            next_report += 30
        time.sleep(poll_seconds(timeout))
    log.info("%g GPU(s) up after %.0f s", _gpus(), time.monotonic() - started)
    return True


def release_gpus() -> None:
    """Withdraw the standing GPU request (the trials' own requests keep the nodes they use). A driver killed
    outright leaves it standing: the next run on the cluster replaces it, or clear it by hand (docs/training.md,
    Resources). Never raises: it runs on the way out of a run, where a lost cluster must not hide the error."""
    global _gpus_requested
    if _gpus_requested and ray.is_initialized():
        from ray.autoscaler.sdk import request_resources

        try:
            request_resources(bundles=[])
        except Exception as e:  # noqa: BLE001
            log.warning(
                "could not withdraw the GPU request from the autoscaler (%s); see docs/training.md, "
                "Resources, to clear it by hand",
                e,
            )
    _gpus_requested = False


def _gpus() -> float:
    return ray.cluster_resources().get("GPU", 0)
