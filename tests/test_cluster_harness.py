"""The two-node harness itself: a worker node that cannot see the head's folders, reaches S3 (moto),
dies completely when killed, and is replaced by a fresh one."""

import os
import time

import pytest
import ray

from cluster_harness import MotoS3, TwoNodeCluster, group_pids, session_pids

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]  # a Ray cluster of its own: a minute or more


def test_two_node_cluster_hides_head_dirs_reaches_s3_and_survives_node_loss(tmp_path):
    ray.shutdown()  # a local Ray another test started: this cluster is the only Ray here
    data, runs = tmp_path / "head-data", tmp_path / "head-runs"
    data.mkdir()
    runs.mkdir()
    (data / "only-on-the-head.txt").write_text("head")
    secret = str(data / "only-on-the-head.txt")

    t0 = time.monotonic()
    with MotoS3(log_path=tmp_path / "moto.log") as s3:
        moto_up = time.monotonic() - t0
        cluster = TwoNodeCluster(
            hidden_dirs=[data, runs], env={**os.environ, **s3.env}, log_dir=tmp_path / "logs"
        )
        with cluster:
            groups = list(cluster._groups)
            try:
                cluster.connect(log_to_driver=False)  # ray.init(address=cluster.address), auth mode aligned
                probe = _probe(s3.url)  # a nested function: pickled by value, no test module to import

                first = ray.get(probe.options(num_cpus=1).remote(secret, "first"), timeout=120)
                assert first["node"] == cluster.worker_node_id  # the head has 0 CPUs
                assert first == {
                    **first,
                    "sees_file": False,
                    "hidden_dir_listing": [],
                    "s3_read": b"first",
                    "endpoint": s3.endpoint,
                    "auth_mode": "disabled",
                }
                assert s3.client().get_object(Bucket=s3.bucket, Key="probe/first")["Body"].read() == b"first"

                on_head = ray.get(
                    probe.options(
                        num_cpus=0,
                        scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                            cluster.head_node_id, soft=False
                        ),
                    ).remote(secret, "head"),
                    timeout=120,
                )
                assert (
                    on_head["node"] == cluster.head_node_id
                    and on_head["sees_file"]
                    and on_head["s3_read"] == b"head"
                )

                # An actor on the worker node (actors, unlike tasks, die at once on an auth-mode mismatch).
                pid = ray.get(_pid_actor().options(num_cpus=1).remote().pid.remote(), timeout=120)
                old_pids = cluster.worker_node_pids()
                assert pid in old_pids and pid not in group_pids(
                    cluster.worker.pid
                )  # Ray workers: own groups
                assert pid in session_pids(cluster.worker.pid)
                dead = cluster.kill_worker_node()
                assert cluster.worker_node_pids() == [] and not any(
                    os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in old_pids
                )
                assert {n["NodeID"]: n["Alive"] for n in ray.nodes()}[dead] is False

                cluster.start_worker_node()
                assert cluster.worker_node_id != dead
                second = ray.get(probe.options(num_cpus=1).remote(secret, "second"), timeout=120)
                assert second["node"] == cluster.worker_node_id and not second["sees_file"]
                assert second["s3_read"] == b"second"
                assert sorted(n["Alive"] for n in ray.nodes()) == [False, True, True]
            finally:
                ray.shutdown()
                t_stop = time.monotonic()
        stopped = time.monotonic() - t_stop
        assert cluster.processes() == []
        assert all(group_pids(pgid) == [] and session_pids(pgid) == [] for pgid in groups)
    print(
        f"\nmoto up {moto_up:.1f} s; cluster timings (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in cluster.timings.items())
        + f", stop {stopped:.1f}"
    )


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def _pid_actor():
    @ray.remote
    class Pid:  # defined in a function: pickled by value (the worker node cannot import test modules)
        def pid(self) -> int:
            return os.getpid()

    return Pid


def _probe(bucket_url: str):
    @ray.remote(max_retries=0)
    def probe(secret: str, key: str) -> dict:
        import pyarrow.fs

        filesystem, root = pyarrow.fs.FileSystem.from_uri(f"{bucket_url}/probe")  # the environment's endpoint
        with filesystem.open_output_stream(f"{root}/{key}") as out:
            out.write(key.encode())
        with filesystem.open_input_stream(f"{root}/{key}") as stream:
            read = stream.read()
        hidden = os.path.dirname(secret)
        return {
            "node": ray.get_runtime_context().get_node_id(),
            "sees_file": os.path.exists(secret),
            "hidden_dir_listing": os.listdir(hidden) if os.path.isdir(hidden) else None,
            "s3_read": read,
            "endpoint": os.environ.get("AWS_ENDPOINT_URL"),
            "auth_mode": os.environ.get("RAY_AUTH_MODE"),
        }

    return probe
