"""Ray Data on a three-node cluster whose nodes share no disk, as the data plane runs at scale: a head of 0 CPUs
and small object stores, two worker nodes of 2 CPUs, data and runs in a bucket (moto's S3 on loopback).
`prepare` writes the shards from tasks on the worker nodes; a trial's two DDP ranks, on two nodes, stream
the splits from the bucket (more than fit in the object stores), where a Ray Data listing task of one whole
CPU once waited forever beside them, and finish on a fresh node when one of theirs dies, and again when one rank's
process is killed on a live node. The model is the cheapest (a bag of 3,500-token reviews): the data path is what
is tested."""

import contextlib
import json
import os
import signal
from pathlib import Path

import pytest
import ray
from test_two_nodes import bucket_json, checkpoint_metas, cli, training_in_background

from cluster_harness import MotoS3, TwoNodeCluster
from conftest import assert_predictions_of_every_review, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.own_ray]  # minutes: real training through Ray

STORE = (
    75 * 1024**2
)  # each node's object store, Ray's smallest: the splits below (~70 MB) are more than a quarter
REVIEWS, VAL, MAX_LEN = 2500, 250, 3500  # of the three


@pytest.fixture(scope="module")
def cluster(imdb_path, tmp_path_factory):
    ray.shutdown()  # a local Ray another test started: this cluster is the only Ray here
    head_data, logs = tmp_path_factory.mktemp("head-data"), tmp_path_factory.mktemp("three-node-logs")
    with MotoS3(log_path=logs / "moto.log") as s3:
        with TwoNodeCluster(
            hidden_dirs=[head_data],
            env={**os.environ, **s3.env},
            log_dir=logs,
            object_store_bytes=STORE,
            extra_worker_nodes=1,
        ) as nodes:
            nodes.s3, nodes.data = s3, f"{s3.url}/prepared"
            nodes.prepared = cli(
                nodes,
                "prepare",
                "--source",
                str(imdb_path),
                "--out",
                nodes.data,
                "--max-reviews-per-split",
                str(REVIEWS),
                "--val-size",
                str(VAL),
                "--max-len",
                str(MAX_LEN),
                "--vocab-size",
                "20000",
            )
            yield nodes


def test_prepare_reads_on_the_head_and_sorts_and_writes_on_the_workers_into_the_bucket(cluster):
    assert cluster.prepared.returncode == 0, cluster.prepared.stderr[-3000:]
    manifest = bucket_json(cluster, "prepared/manifest.json")
    files = {name: f for split in manifest["splits"].values() for name, f in split["files"].items()}
    listed = cluster.s3.client().list_objects_v2(Bucket=cluster.s3.bucket, Prefix="prepared/")["Contents"]
    sizes = {o["Key"].removeprefix("prepared/"): o["Size"] for o in listed}
    assert {name: f["bytes"] for name, f in files.items()} == {name: sizes[name] for name in files}
    tasks = [t for t in cluster.listed("tasks") if t["state"] == "FINISHED"]
    ran = lambda name: [t["node_id"] for t in tasks if t["name"].endswith(name)]
    workers = {cluster.worker_node_id, cluster.extra[0][2]}
    assert len(ran("_write_shard")) == len(files) and set(ran("_write_shard")) <= workers  # never on the head
    # The source is read where it lies (the driver's node, the head: 0 CPUs), sorted and tokenised on the workers.
    assert ran("_read_range_parts") and set(ran("_read_range_parts")) == {cluster.head_node_id}
    assert ran("_sort_range") and set(ran("_sort_range") + ran("_scatter_range")) <= workers


def test_two_ranks_on_two_nodes_stream_from_the_bucket_and_outlive_a_lost_node_and_a_killed_rank(
    cluster, tmp_path
):
    """A trial's two DDP ranks, one on each worker node, stream the splits from the bucket. Once epoch 1 is
    checkpointed there, one of their nodes is SIGKILLed, as if the machine died, and a fresh node joins: Train
    restarts the worker group (on the nodes that fit it) from that checkpoint. Once epoch 2 is checkpointed, one
    rank's process is SIGKILLed on its live node (as the kernel's OOM killer would): the group restarts again.
    Every epoch is kept once and every test review scored once. (One run for the three: each costs a
    cluster's worth of start-up.)"""
    assert cluster.prepared.returncode == 0, cluster.prepared.stderr[-3000:]
    with training_in_background(
        cluster,
        tmp_path / "train.log",
        "streamed",
        "--archs",
        "mlp",
        "--pooling",
        "mean",
        "--workers-per-trial",
        "2",
        "--epochs",
        "3",
        "--batch-size",
        "16",  # epochs of seconds, not one: the node and the rank are lost while the run trains
        "--verify",
        "--verbose",
    ) as run:
        wait_for(lambda: registered_epoch(cluster) == 1, 600, "epoch 1's checkpoint", interval=0.5)
        first_ranks = alive_ranks(cluster)
        cluster.kill_worker_node()
        lost_after = registered_epoch(cluster)
        cluster.start_worker_node()
        wait_for(lambda: registered_epoch(cluster) == 2, 600, "epoch 2's checkpoint", interval=0.5)
        rank = wait_for(lambda: alive_ranks(cluster), 60, "the restarted group's ranks")[0]
        os.kill(rank["pid"], signal.SIGKILL)  # the pid namespace is the machine's: only mounts are the node's
        killed_after = registered_epoch(cluster)
        assert run.wait(timeout=600) == 0, (tmp_path / "train.log").read_text()[-5000:]
    assert len(first_ranks) == 2 and len({a["node_id"] for a in first_ranks}) == 2  # a rank on each node
    assert (lost_after, killed_after) == (1, 2), "each fault struck in the epoch after the one registered"
    assert "streaming the splits from their shards" in (tmp_path / "train.log").read_text()
    results = bucket_json(cluster, "runs/streamed/results.json")["results"]["mlp"]
    assert results["epochs"] == 3
    assert [h["epoch"] for h in checkpoint_metas(cluster, "streamed", "mlp")[-1]["history"]] == [1, 2, 3]
    assert len(train_workers(cluster)) >= 6  # the group started thrice: two ranks each, wherever they fit
    assert results["test_reviews"] == REVIEWS  # every test review scored, once, over the two ranks' shares
    assert_predictions_of_every_review(download(cluster, results["checkpoint"], tmp_path / "tested"), results)


def registered_epoch(cluster) -> int | None:
    """The epoch of the latest checkpoint that the streamed run's Train controller has registered, as its snapshot
    in the bucket says: a restarted worker group resumes from it (a checkpoint in the bucket not yet registered
    would be redone)."""
    client, bucket = cluster.s3.client(), cluster.s3.bucket
    listed = client.list_objects_v2(Bucket=bucket, Prefix="runs/streamed/train/").get("Contents", [])
    for key in [o["Key"] for o in listed if o["Key"].endswith("/checkpoint_manager_snapshot.json")]:
        with contextlib.suppress(client.exceptions.NoSuchKey, json.JSONDecodeError):  # being rewritten
            snapshot = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            return (snapshot["latest_checkpoint_result"] or {}).get("metrics", {}).get("epoch")
    return None


def train_workers(cluster) -> list[dict]:
    """Every Train worker actor the cluster's state API knows, dead ones included (node id, pid and state each)."""
    return [a for a in cluster.listed("actors") if a["class_name"].endswith("TrainWorker")]


def alive_ranks(cluster) -> list[dict]:
    return [a for a in train_workers(cluster) if a["state"] == "ALIVE"]


def download(cluster, checkpoint: str, into: Path) -> Path:
    """The test predictions of a checkpoint in the bucket (`s3://BUCKET/KEY`), copied into the folder `into`."""
    into.mkdir()
    key = checkpoint.removeprefix(f"{cluster.s3.url}/").rstrip("/") + "/test_predictions.parquet"
    cluster.s3.client().download_file(cluster.s3.bucket, key, str(into / "test_predictions.parquet"))
    return into
