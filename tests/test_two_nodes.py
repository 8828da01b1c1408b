"""The job on a real two-node cluster whose nodes share no disk, as a user runs it: a head with no CPU
holding the prepared data, a worker node (its own mount namespace) that cannot see the head's folders, and
run storage in a bucket (moto's S3 on loopback). Every command is the CLI in its own process. The last test
checks the harness itself on the same cluster, and the cluster's teardown that it leaves no process behind."""

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
import ray

from cluster_harness import MotoS3, TwoNodeCluster, group_pids, session_pids
from conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]  # minutes: real training through Ray

CLI = [sys.executable, "-m", "rnn_models"]
REVIEWS = 2500  # per source split: epochs of a few seconds, long enough to lose a node in one


@pytest.fixture(scope="module")
def cluster(imdb_path, tmp_path_factory):
    ray.shutdown()  # a local Ray another test started: this cluster is the only Ray here
    head_data, head_runs = tmp_path_factory.mktemp("head-data"), tmp_path_factory.mktemp("head-runs")
    logs = tmp_path_factory.mktemp("two-node-logs")
    with MotoS3(log_path=logs / "moto.log") as s3:
        with TwoNodeCluster(
            hidden_dirs=[head_data, head_runs], env={**os.environ, **s3.env}, log_dir=logs
        ) as nodes:
            nodes.s3, nodes.data, nodes.head_runs = s3, str(head_data / "prepared"), head_runs
            done = cli(
                nodes,
                "prepare",
                "--source",
                str(imdb_path),
                "--out",
                nodes.data,
                "--max-reviews-per-split",
                str(REVIEWS),
                "--val-size",
                "200",
                "--max-len",
                "128",
            )
            assert done.returncode == 0, done.stderr[
                -3000:
            ]  # encoded on the worker node, written by the driver
            yield nodes
            groups = list(nodes._groups)
    # stopped: every process of every node gone, its process groups and sessions too
    assert nodes.processes() == []
    assert all(group_pids(pgid) == [] and session_pids(pgid) == [] for pgid in groups)


def cli(nodes: TwoNodeCluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`rnn-models ARGS --address <the cluster>` on the head's side, as a user's shell there runs it."""
    return subprocess.run(
        [*CLI, *args, "--address", nodes.address],
        capture_output=True,
        text=True,
        env=nodes.env,
        timeout=timeout,
    )


def train_in_bucket(nodes: TwoNodeCluster, name: str) -> list[str]:
    """`train` arguments for the bucket's data, into the bucket's `runs/<name>`."""
    return ["train", "--data", nodes.data, "--storage", f"{nodes.s3.url}/runs", "--name", name]


@contextlib.contextmanager
def training_in_background(nodes: TwoNodeCluster, log_path, name: str, *args: str):
    """`rnn-models train` of the bucket's data into the bucket's `runs/<name>`, with `args`, running in the
    background (its output in `log_path`) while the block acts on the cluster; killed if still running after."""
    with open(log_path, "w") as log:
        run = subprocess.Popen(
            [*CLI, *train_in_bucket(nodes, name), *args, "--address", nodes.address],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=nodes.env,
            start_new_session=True,
        )
        try:
            yield run
        finally:
            if run.poll() is None:
                run.kill()


def bucket_json(nodes: TwoNodeCluster, key: str) -> dict:
    return json.loads(nodes.s3.client().get_object(Bucket=nodes.s3.bucket, Key=key)["Body"].read())


def checkpoint_metas(nodes: TwoNodeCluster, run: str, arch: str) -> list[dict]:
    """meta.json of each checkpoint of `arch`'s trial in the bucket, by epoch: in the trial's folder (one worker)
    or in its worker group's Train run (`train/<arch>-<trial id>`)."""
    listed = nodes.s3.client().list_objects_v2(Bucket=nodes.s3.bucket, Prefix=f"runs/{run}/")
    keys = [
        o["Key"]
        for o in listed.get("Contents", [])
        if (f"arch={arch}_" in o["Key"] or f"/train/{arch}-" in o["Key"])
        and "/checkpoint_" in o["Key"]
        and o["Key"].endswith("/meta.json")
    ]
    metas = [meta for key in keys if (meta := _bucket_json_if_kept(nodes, key)) is not None]
    return sorted(metas, key=lambda meta: meta["epoch"])


def _bucket_json_if_kept(nodes: TwoNodeCluster, key: str) -> dict | None:
    """The object, or None if it went between listing and reading: Tune keeps one checkpoint and deletes the one
    before it once the next is registered."""
    try:
        return bucket_json(nodes, key)
    except nodes.s3.client().exceptions.NoSuchKey:
        return None


def checkpoint_epochs(nodes: TwoNodeCluster, run: str, arch: str) -> list[int]:
    return [meta["epoch"] for meta in checkpoint_metas(nodes, run, arch)]


def test_head_local_storage_is_refused_before_training(cluster):
    done = cli(
        cluster,
        "train",
        "--data",
        cluster.data,
        "--storage",
        str(cluster.head_runs),
        "--archs",
        "mlp",
        "--epochs",
        "1",
        "--name",
        "refused",
    )
    assert done.returncode == 2, done.stderr[-3000:]
    error = done.stderr[done.stderr.index("error: ") :]
    assert (
        "a folder on this node's disk, but the Ray cluster has 2 nodes" in error
        and "s3://BUCKET/runs" in error
    )
    assert "Traceback" not in done.stderr and len(error.strip().splitlines()) == 1
    assert not (cluster.head_runs / "refused").exists()


def test_a_run_that_loses_its_worker_node_finishes_and_is_evaluated_predicted_and_resumed_from_a_bucket(
    cluster, tmp_path
):
    """A user's run on the cluster: the worker node is SIGKILLed, as if the machine died, once bilstm has
    checkpointed epoch 1, and a fresh node joins: each trial loses at most the epoch it was in. Then the checkpoint
    in the bucket is evaluated and predicted with, and the finished run resumed. (One run for the two stories: each
    costs a trial's start-up and a node's.)"""
    archs = ["--archs", "mlp,bilstm", "--epochs", "3"]
    with training_in_background(cluster, tmp_path / "train.log", "two-node", *archs) as training:
        wait_for(
            lambda: checkpoint_epochs(cluster, "two-node", "bilstm") == [1],
            300,
            "bilstm's checkpoint of epoch 1",
            interval=0.5,
        )
        time.sleep(1)  # into epoch 2, past Tune's registration of epoch 1's checkpoint
        cluster.kill_worker_node()
        lost, killed_at = checkpoint_epochs(cluster, "two-node", "bilstm"), time.monotonic()
        cluster.start_worker_node()
        wait_for(
            lambda: 2 in checkpoint_epochs(cluster, "two-node", "bilstm"),
            300,
            "epoch 2 after the node loss",
            interval=0.5,
        )
        print(f"node loss: epoch 2 checkpointed {time.monotonic() - killed_at:.0f} s after the kill")
        assert training.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-5000:]
    assert lost == [1], "the node was lost after epoch 1 and before epoch 2 ended"
    results = bucket_json(cluster, "runs/two-node/results.json")["results"]
    assert set(results) == {"mlp", "bilstm"} and all(r["test_reviews"] == REVIEWS for r in results.values())
    # bilstm's epoch 2 redone from epoch 1's checkpoint, once; mlp's as it was lost, if it was
    for arch in results:
        assert [h["epoch"] for h in checkpoint_metas(cluster, "two-node", arch)[-1]["history"]] == [1, 2, 3]
    bilstm = results["bilstm"]
    assert bilstm["epochs"] == 3 and bilstm["checkpoint"].startswith(
        f"{cluster.s3.url}/runs/two-node/run_trial_"
    )

    evaluated = cli(cluster, "evaluate", "--checkpoint", bilstm["checkpoint"], "--data", cluster.data)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert f"test accuracy {bilstm['test_accuracy']:.4f}" in evaluated.stdout

    predicted = subprocess.run(
        [*CLI, "predict", "--checkpoint", bilstm["checkpoint"], "A wonderful film."],
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=300,
    )
    assert predicted.returncode == 0 and "\tA wonderful film." in predicted.stdout, predicted.stderr[-3000:]

    # a finished run: both trials kept, the report written again
    resumed = cli(cluster, *train_in_bucket(cluster, "two-node"), *archs, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert bucket_json(cluster, "runs/two-node/results.json")["results"] == results


def test_the_harness_hides_the_heads_folders_reaches_s3_and_replaces_a_killed_node(cluster):
    """The harness itself, last in this module (it kills the worker node): a worker node that cannot see the
    head's folders, reaches S3 (moto), dies completely when killed, and is replaced by a fresh one."""
    secret = os.path.join(os.path.dirname(cluster.data), "only-on-the-head.txt")
    with open(secret, "w") as f:
        f.write("head")
    s3 = cluster.s3
    cluster.connect(log_to_driver=False)  # ray.init(address=cluster.address), auth mode aligned
    try:
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
            on_head["node"] == cluster.head_node_id and on_head["sees_file"] and on_head["s3_read"] == b"head"
        )

        # An actor on the worker node (actors, unlike tasks, die at once on an auth-mode mismatch).
        pid = ray.get(_pid_actor().options(num_cpus=1).remote().pid.remote(), timeout=120)
        old_pids = cluster.worker_node_pids()
        assert pid in old_pids and pid not in group_pids(cluster.worker.pid)  # Ray workers: own groups
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
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert alive == {cluster.head_node_id, cluster.worker_node_id}
    finally:
        ray.shutdown()


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
