"""A real two-node Ray cluster on this one machine, whose nodes share no disk, and an S3 emulator (moto).

    with MotoS3() as s3, TwoNodeCluster(hidden_dirs=[data, runs], env={**os.environ, **s3.env}) as cluster:
        cluster.connect()                # ray.init(address=cluster.address) from this process, or run
        ...                              # `rnn-models train --address <cluster.address>` with env=cluster.env
        cluster.kill_worker_node()       # every process of the worker node dies; the GCS marks it dead
        cluster.start_worker_node()      # a fresh worker node joins

- The head (`ray start --head --num-cpus=0`, dashboard on 127.0.0.1 with the state and job APIs) sees
  the whole machine; so do the Ray workers its raylet starts.
- The worker node (`--num-cpus=worker_cpus`) runs in its own mount namespace with an empty tmpfs
  mounted over each of `hidden_dirs`: its processes cannot see what the head writes there. Its Ray
  session files stay under /tmp/ray, which must not be inside a hidden dir.
- Each node runs in its own session (start_new_session=True) *and* its own mount namespace (the head's
  is a plain copy of the machine's mounts). Ray worker processes (`ray::...`) put themselves in process
  groups of their own, so `killpg`/`pgrep -g` of a node's group misses them; the node's mount namespace
  holds them all, which is how `kill_worker_node` and `stop` find every process. Never `ray stop`: that
  ends every Ray on the machine.
- Token authentication is off (`RAY_AUTH_MODE=disabled`) on both nodes and in `cluster.env`. Run CLI
  drivers (`rnn-models ... --address`, `ray job submit`, `ray list nodes`) with env=cluster.env, and
  connect this process with `cluster.connect()` (see there why not a bare `ray.init`); the dashboard's
  HTTP APIs need no header. Left to its default, Ray 2.60's `ray start` turns token auth on whenever
  ~/.ray/auth_token exists (any earlier local `ray.init()` creates it), while an explicit
  `ray.init(address=...)` never turns it on by itself: whether they match would depend on the machine.
- Ray rewrites --node-ip-address=127.0.0.1 to the machine's routable address (both nodes show as e.g.
  192.0.2.2 and `ray.init` logs that address); connecting through 127.0.0.1:PORT works all the same.
- The head's GCS health checks run faster than Ray's defaults, so that a killed node is marked dead
  in a few seconds: see HEALTH_CHECK.
- Only the head runs a log monitor: the nodes share /tmp/ray, so it reads every node's worker logs (a monitor
  on each node sent each line to the drivers once per node).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import forget_head, free_port, ray_temp_dir, wait_for

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")

# GCS health checks of the raylets (read from the environment by the head's GCS; Ray's defaults are
# 3 s × 5 failures, 10 s timeout): a killed raylet fails each check at once (connection refused), so it is
# marked dead about period × threshold = 5 s after the kill; a live but busy raylet must miss 5 checks in
# a row, 3 s each, to be marked dead. Measured here with 2-core oversubscription (5 busy loops): no false
# node death in 45 s even at 2 s × 3.
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "3000",
    "RAY_health_check_failure_threshold": "5",
}


# A raylet keeps at most as many idle Python workers as its node has CPUs (num_workers_soft_limit) and kills
# the rest after 1 s idle. A 2-CPU node running a Train worker and Ray Data's coordinator is always over that
# limit, so every streamed read task started a Python worker of its own: 3.7 s of its 3.9 s, one task at a time
# (48 samples/s for a bag of words, measured here). Nodes with more CPUs than long-lived actors never see it.
WORKER_POOL = {"RAY_num_workers_soft_limit": "8"}


def _stop_group(proc: subprocess.Popen | None, timeout: float, leader_only: bool = False) -> None:
    """SIGTERM the process group led by `proc` (started with start_new_session=True), or only its leader,
    wait up to `timeout` seconds for the leader to exit, then SIGKILL the group."""
    if proc is None:
        return
    try:
        if leader_only:
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _stat_pids(field: int, value: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
            if fields[0] != "Z" and int(fields[field]) == value:
                found.append(int(entry.name))
    return found


def group_pids(pgid: int) -> list[int]:
    """Processes, zombies excepted, in process group `pgid` (what `pgrep -g PGID` lists). Ray worker
    processes (`ray::...`) are not among them: each makes its own process group."""
    return _stat_pids(2, pgid)


def session_pids(sid: int) -> list[int]:
    """Processes, zombies excepted, in session `sid` (`pgrep -s SID`): Ray workers included."""
    return _stat_pids(3, sid)


def _mount_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def namespace_pids(ns: str) -> list[int]:
    """Live processes (zombies excepted) in mount namespace `ns` (as /proc/PID/ns/mnt names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _mount_ns(int(entry.name)) == ns:
            try:
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
            except (OSError, IndexError):
                continue
    return found


def _kill_namespace(ns: str | None, timeout: float, what: str) -> None:
    """SIGKILL every process in mount namespace `ns` until none is left (processes can fork meanwhile)."""
    if ns is None or ns == _mount_ns(os.getpid()):
        return  # never the test process's own namespace

    def gone():
        for pid in namespace_pids(ns):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not namespace_pids(ns)

    wait_for(gone, timeout, f"every process of {what} to end")


def _reload_auth_config() -> None:
    """Make this process's Ray re-read RAY_AUTH_MODE (and token) from the environment, as Ray's own
    `reset_auth_token_state` test helper does: its config and token loader cache them."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


class MotoS3:
    """`python -m moto.server` on a free loopback port, with one bucket.

    endpoint: "http://127.0.0.1:PORT"; bucket; url: "s3://<bucket>"; env: what a process (boto3,
    pyarrow's S3FileSystem, Ray Train's storage_path="s3://...") needs to use it; merge it into the
    environment of every Ray node and driver.
    """

    def __init__(
        self,
        bucket: str = "rnn-models-test",
        log_path: str | os.PathLike | None = None,
        start_timeout: float = 60,
    ):
        self.bucket, self.url = bucket, f"s3://{bucket}"
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,  # boto3 and pyarrow >= 15 both honour it
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance-metadata service
        }
        self.log_path, self.start_timeout = log_path, start_timeout
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MotoS3":
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        try:
            wait_for(self._create_bucket, self.start_timeout, f"moto at {self.endpoint}", interval=0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def _create_bucket(self) -> bool:
        assert self.proc.poll() is None, f"moto.server exited with {self.proc.returncode}"
        import boto3
        import botocore.exceptions

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        try:
            client.create_bucket(Bucket=self.bucket)
        except botocore.exceptions.EndpointConnectionError:
            return False
        return True

    def client(self):
        """A boto3 S3 client for the emulator."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self, timeout: float = 10) -> None:
        _stop_group(self.proc, timeout)

    def __enter__(self) -> "MotoS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class TwoNodeCluster:
    """A head node (0 CPUs, dashboard) and one worker node that cannot see `hidden_dirs` (plus
    `extra_worker_nodes` more like it, each in a mount namespace of its own: a three-node cluster).

    Arguments:
        hidden_dirs: existing folders (not inside /tmp/ray) the worker node must not see, e.g. the
            head's data and storage folders.
        env: the environment of both nodes (default: os.environ), e.g. {**os.environ, **s3.env};
            Ray workers on either node inherit it. RAY_ADDRESS and RAY_AUTH_* are replaced.
        worker_cpus, head_cpus: logical CPUs of each node.
        extra_worker_nodes: worker nodes beside the first, started with it and stopped with the cluster
            (`kill_worker_node` and `start_worker_node` act on the first only).
        object_store_bytes: each node's object store (Ray's default is 30 % of memory per node).
        log_dir: where `ray start`'s own output goes (head.log, worker-N.log); a temporary folder by
            default. Ray's logs are in /tmp/ray/session_latest/logs as usual.
        health_check: the head's GCS health-check settings (environment variables); None: Ray's defaults.
        start_timeout: seconds each node may take to come up.

    Attributes (after start): address ("127.0.0.1:PORT", for ray.init and --address), port,
    dashboard_port, dashboard_url, env (the nodes' environment: use it for CLI subprocesses),
    head / worker (the `ray start --block` Popen objects), head_node_id, worker_node_id, timings
    (seconds: head_up, worker_up, worker_dead, worker_rejoin).
    """

    def __init__(
        self,
        hidden_dirs=(),
        env: dict | None = None,
        worker_cpus: float = 2,
        head_cpus: float = 0,
        object_store_bytes: int = 1024**3,
        log_dir: str | os.PathLike | None = None,
        health_check: dict | None = HEALTH_CHECK,
        start_timeout: float = 120,
        extra_worker_nodes: int = 0,
    ):
        self.hidden_dirs = [Path(d).resolve() for d in hidden_dirs]
        ray_tmp = ray_temp_dir()
        for d in self.hidden_dirs:
            assert d.is_dir(), f"hidden dir {d} does not exist"
            assert d != Path("/") and not ray_tmp.is_relative_to(d) and not d.is_relative_to(ray_tmp), (
                f"hidden dir {d} would hide Ray's session files under {ray_tmp}, or lies inside them"
            )
        self.worker_cpus, self.head_cpus, self.object_store_bytes = worker_cpus, head_cpus, object_store_bytes
        self.extra_worker_nodes = extra_worker_nodes
        self.extra: list[
            tuple[subprocess.Popen, str, str]
        ] = []  # (ray start, mount namespace, node id) of each
        self.start_timeout = start_timeout
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="two-node-cluster-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        base = dict(os.environ if env is None else env)
        for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            base.pop(name, None)
        self.env = {
            **base,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            **WORKER_POOL,
            **(health_check or {}),
        }
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard_url = f"http://127.0.0.1:{self.dashboard_port}"
        self.head: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None
        self.head_ns: str | None = None
        self.worker_ns: str | None = None
        self.head_node_id: str | None = None
        self.worker_node_id: str | None = None
        self.dead_worker_node_ids: list[str] = []
        self.timings: dict[str, float] = {}
        self._workers_started = 0
        self._groups: list[int] = []  # the session (= process group) id of each `ray start` started

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "TwoNodeCluster":
        try:
            self._start_head()
            self.start_worker_node()
            for _ in range(self.extra_worker_nodes):
                self.extra.append(self._start_worker_process())
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> "TwoNodeCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _popen(self, argv: list[str], log_name: str) -> subprocess.Popen:
        with open(self.log_dir / log_name, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        self._groups.append(proc.pid)
        return proc

    def _start_head(self, extra_args: tuple[str, ...] = ()) -> None:
        t0 = time.monotonic()
        # `unshare -m` with no mounts: the head sees the machine as it is, but its processes are then
        # exactly those of its own mount namespace.
        self.head = self._popen(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                RAY,
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={self.port}",
                f"--num-cpus={self.head_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--object-store-memory={self.object_store_bytes}",
                "--disable-usage-stats",
                *extra_args,
            ],
            "head.log",
        )
        self.head_ns = self._namespace_of(self.head, "the head")
        heads = wait_for(
            lambda: (
                self._alive(self.head, "the head")
                and [n for n in self.nodes() if n["state"] == "ALIVE" and n["is_head_node"]]
            ),
            self.start_timeout,
            f"the head at {self.address} to come up",
            interval=0.5,
        )
        self.head_node_id = heads[0]["node_id"]
        wait_for(
            lambda: self._http_ok("/api/jobs/"), self.start_timeout, "the dashboard's job API", interval=0.5
        )
        self.timings["head_up"] = time.monotonic() - t0

    def start_worker_node(self) -> str:
        """Start a fresh worker node; return its node id once the cluster lists it alive beside the head."""
        assert self.head is not None, "start the head first"
        assert self.worker is None or self.worker.poll() is not None, "a worker node is running already"
        t0 = time.monotonic()
        self.worker, self.worker_ns, self.worker_node_id = self._start_worker_process()
        self.timings["worker_up" if self._workers_started == 1 else "worker_rejoin"] = time.monotonic() - t0
        return self.worker_node_id

    def _start_worker_process(self) -> tuple[subprocess.Popen, str, str]:
        """A worker node in a mount namespace of its own, once the cluster lists it alive: (ray start, namespace,
        node id)."""
        known = {n["node_id"] for n in self.nodes()}
        mounts = " && ".join(f"mount -t tmpfs none {shlex.quote(str(d))}" for d in self.hidden_dirs)
        start = shlex.join(
            [
                RAY,
                "start",
                "--block",
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={self.worker_cpus}",
                f"--dashboard-agent-listen-port={free_port()}",
                f"--metrics-export-port={free_port()}",
                f"--object-store-memory={self.object_store_bytes}",
                "--disable-usage-stats",
                "--include-log-monitor=false",  # the head's reads every node's logs: the module's docstring
            ]
        )
        self._workers_started += 1
        proc = self._popen(
            [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "bash",
                "-c",
                f"{mounts + ' && ' if mounts else ''}exec {start}",
            ],
            f"worker-{self._workers_started}.log",
        )
        ns = self._namespace_of(proc, "the worker node")

        def joined():
            self._alive(proc, "the worker node")
            return [
                n
                for n in self.nodes()
                if n["state"] == "ALIVE" and n["node_id"] not in known and not n["is_head_node"]
            ]

        try:
            node_id = wait_for(joined, self.start_timeout, "the worker node to join", interval=0.5)[0][
                "node_id"
            ]
        except BaseException:
            self._kill_node_processes(proc, ns)
            raise
        return proc, ns, node_id

    def connect(self, **init_kwargs):
        """`ray.init(address=self.address, **init_kwargs)` from this process, after setting this process's
        auth mode to the cluster's (`stop` restores it).

        Needed: a local `ray.init()` earlier in the process (conftest's `start_ray`) leaves
        RAY_AUTH_MODE=token in os.environ and in Ray's cached config; a driver in token mode then connects
        to this cluster and runs tasks, but its actors die at once (ActorDiedError, "all references to the
        actor were removed"), the cluster's RPCs to the driver being refused. Setting the variable is not
        enough: Ray's cached config and token loader must re-read it (`_reload_auth_config`)."""
        import ray

        if not hasattr(self, "_saved_auth_mode"):
            self._saved_auth_mode = os.environ.get("RAY_AUTH_MODE")
        os.environ["RAY_AUTH_MODE"] = self.env["RAY_AUTH_MODE"]
        _reload_auth_config()
        return ray.init(address=self.address, **init_kwargs)

    def _restore_auth_mode(self) -> None:
        if not hasattr(self, "_saved_auth_mode"):
            return
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self._saved_auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = self._saved_auth_mode
        _reload_auth_config()
        del self._saved_auth_mode

    def kill_worker_node(self, timeout: float = 60) -> str:
        """SIGKILL every process of the worker node (its `ray start`, raylet, agents and Ray workers), as
        if the machine died; wait until none is left and the cluster marks the node dead. Returns its id."""
        assert self.worker is not None and self.worker_node_id is not None, "no worker node"
        t0 = time.monotonic()
        node_id = self.worker_node_id
        self._kill_worker_processes()
        wait_for(
            lambda: any(n["node_id"] == node_id and n["state"] == "DEAD" for n in self.nodes()),
            timeout,
            f"the cluster to mark worker node {node_id[:8]} dead",
            interval=0.2,
        )
        self.timings["worker_dead"] = time.monotonic() - t0
        self.dead_worker_node_ids.append(node_id)
        self.worker_node_id = None
        return node_id

    def _kill_worker_processes(self) -> None:
        if self.worker is not None:
            self._kill_node_processes(self.worker, self.worker_ns)

    @staticmethod
    def _kill_node_processes(proc: subprocess.Popen, ns: str | None) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _kill_namespace(ns, 30, "the worker node")
        proc.wait(timeout=10)

    def stop(self, timeout: float = 3) -> None:
        """Stop everything this cluster started, worker node first: SIGTERM each node's `ray start --block`
        (it stops its node's processes in order), a short wait (a test cluster holds nothing worth a graceful
        stop; a node's `ray start` otherwise waited out the whole 30 s it gave its raylet), SIGKILL its process
        group, then SIGKILL whatever is left in the node's mount namespace.

        Only the leader gets SIGTERM: sent to the whole group, the head's GCS ends at once and the head's
        `ray start` then waits its full 30 s drain timeout for it."""
        self._restore_auth_mode()  # shuts down first a driver that `connect` started in this process
        nodes = [(proc, ns, "a worker node") for proc, ns, _ in self.extra]
        nodes += [(self.worker, self.worker_ns, "the worker node"), (self.head, self.head_ns, "the head")]
        for proc, ns, what in nodes:
            if proc is not None:
                _stop_group(proc, timeout, leader_only=True)
                _kill_namespace(ns, 30, what)
        for sid in self._groups:  # earlier worker nodes' sessions are gone already; this is cheap
            for pid in session_pids(sid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        forget_head(self.port)

    # ---- inspection ----------------------------------------------------------------------------------

    def processes(self) -> list[int]:
        """Every live process this cluster started: its sessions (process groups and Ray workers) and both
        nodes' mount namespaces."""
        pids = {pid for sid in self._groups for pid in session_pids(sid)}
        for ns in (self.head_ns, self.worker_ns, *(ns for _, ns, _ in self.extra)):
            if ns is not None and ns != _mount_ns(os.getpid()):
                pids.update(namespace_pids(ns))
        return sorted(pids)

    def worker_node_pids(self) -> list[int]:
        """Live processes of the current worker node (its mount namespace)."""
        return namespace_pids(self.worker_ns) if self.worker_ns else []

    def nodes(self) -> list[dict]:
        """The cluster's nodes as the dashboard's state API (`ray list nodes`) lists them; [] while it is down."""
        try:
            with urllib.request.urlopen(
                f"{self.dashboard_url}/api/v0/nodes?limit=1000&detail=false&timeout=10", timeout=15
            ) as response:
                body = json.load(response)
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return body.get("data", {}).get("result", {}).get("result", []) or []

    def listed(self, kind: str) -> list[dict]:
        """Every task or actor (`kind`: "tasks", "actors") the state API still knows, finished ones included."""
        with urllib.request.urlopen(
            f"{self.dashboard_url}/api/v0/{kind}?limit=10000&detail=false&timeout=30", timeout=45
        ) as response:
            return json.load(response)["data"]["result"]["result"]

    def _http_ok(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.dashboard_url + path, timeout=15) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _namespace_of(self, proc: subprocess.Popen, what: str) -> str:
        """The mount namespace `proc` runs in, once `unshare` has made it (and before it exits)."""
        own = _mount_ns(os.getpid())
        return wait_for(
            lambda: self._alive(proc, what) and (ns := _mount_ns(proc.pid)) != own and ns,
            10,
            f"{what} to enter its own mount namespace",
            interval=0.02,
        )

    def _alive(self, proc: subprocess.Popen, what: str) -> bool:
        if proc.poll() is not None:
            log = self.log_dir / ("head.log" if proc is self.head else f"worker-{self._workers_started}.log")
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            raise AssertionError(f"{what} exited with {proc.returncode}; its output ends:\n{tail}")
        return True


class AutoscalingCluster(TwoNodeCluster):
    """A head whose autoscaler (Ray's v1, with its fake multi-node provider) adds nodes on demand: each a real
    raylet on this machine with the resources of its `node_types` entry, as a cloud would add machines. No
    `ray up` and so no bootstrap file on the head: the autoscaler is seen only through Ray, as KubeRay's or any
    other autoscaler scaling from zero presents it.

    Ray's own `ray.cluster_utils.AutoscalingCluster` does the same, but runs `ray stop --force` (every Ray on
    the machine) and its wheel lacks the base config. Here the head and every node its autoscaler starts live
    in the head's mount namespace, and `stop` ends exactly those. `set_node_types` rewrites the config, which the
    autoscaler reads again at its next update (every second here).
    """

    def __init__(self, node_types: dict, head_cpus: float = 1, **kwargs):
        super().__init__(head_cpus=head_cpus, **kwargs)
        self.config_path = self.log_dir / "autoscaling.yaml"
        self.env.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
        self.set_node_types(node_types)

    def set_node_types(self, node_types: dict) -> None:
        import yaml

        types = {
            **node_types,
            "ray.head.default": {"resources": {"CPU": self.head_cpus}, "node_config": {}, "max_workers": 0},
        }
        config = {
            "cluster_name": "fake-autoscaling",
            "max_workers": sum(t.get("max_workers", 0) for t in types.values()),
            "upscaling_speed": 1.0,
            "idle_timeout_minutes": 1,
            "head_node_type": "ray.head.default",
            "available_node_types": types,
            "auth": {},
            "provider": {
                "type": "fake_multinode",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "gcs_address": self.address,
            },
            **{
                key: []
                for key in (
                    "initialization_commands",
                    "setup_commands",
                    "head_setup_commands",
                    "worker_setup_commands",
                    "head_start_ray_commands",
                    "worker_start_ray_commands",
                    "cluster_synced_files",
                )
            },
            "file_mounts": {},
            "file_mounts_sync_continuously": False,
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        tmp.replace(self.config_path)  # whole, never half-written, when the autoscaler reads it

    def start(self) -> "AutoscalingCluster":
        try:
            self._start_head((f"--autoscaling-config={self.config_path}",))
        except BaseException:
            self.stop()
            raise
        return self

    def alive_nodes(self) -> list[dict]:
        return [n for n in self.nodes() if n["state"] == "ALIVE"]
