"""What a run asks of the cluster, checked on a real local Ray: storage every node reaches, paths that survive
`ray job submit`, GPUs an autoscaler still has to add, data the driver can hand to Ray."""

import json
import time

import pytest
import yaml

from conftest import cpus_held, fails
from rnn_models.cluster import require_shared_storage, wait_for_gpus
from rnn_models.data.shards import read_shards
from rnn_models.errors import UserError
from rnn_models.storage import Storage
from rnn_models.training import ingest
from rnn_models.training.ingest import DataSpec

SUBMITTED_JOB = {
    "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}})
}


@pytest.fixture
def autoscaler_config(tmp_path):
    """A `ray up` bootstrap config (as the head keeps it) whose GPU node type may still be added."""
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "max_workers": 2,
                "head_node_type": "head",
                "available_node_types": {
                    "head": {"resources": {"CPU": 8}, "node_config": {}},
                    "gpu_1": {
                        "min_workers": 0,
                        "max_workers": 2,
                        "resources": {"CPU": 8, "GPU": 1},
                        "node_config": {},
                    },
                },
            }
        )
    )
    return str(path)


@pytest.mark.parametrize("option", ["--storage", "--data"])
def test_relative_paths_under_ray_job_submit_are_refused(capsys, monkeypatch, option):
    monkeypatch.setenv(*next(iter(SUBMITTED_JOB.items())))
    err = fails(
        capsys, "train", option, "runs/relative", "--storage" if option == "--data" else "--data", "/abs"
    )
    assert f"{option} runs/relative: a relative path under `ray job submit --working-dir`" in err
    assert f"{option} /home/ray/runs/relative" in err


def test_relative_paths_elsewhere_are_made_absolute(monkeypatch, tmp_path):
    from rnn_models.storage import absolute

    monkeypatch.chdir(tmp_path)
    assert absolute("runs", "--storage") == str(tmp_path / "runs")
    assert absolute("s3://bucket/runs", "--storage") == "s3://bucket/runs"


def test_local_storage_is_refused_where_nodes_can_be_added(ray_session, tmp_path, autoscaler_config):
    with pytest.raises(
        UserError,
        match=r"--storage .*: a folder on this node's disk, but the Ray cluster has an "
        r"autoscaler that adds nodes.*--storage s3://BUCKET/runs.*file://",
    ):
        require_shared_storage(Storage(str(tmp_path)), autoscaler_config)
    require_shared_storage(Storage(f"file://{tmp_path}"), autoscaler_config)  # a shared mount, said as such
    require_shared_storage(Storage(str(tmp_path)), str(tmp_path / "absent.yaml"))  # one node, no autoscaler


def test_gpus_an_autoscaler_must_add_are_waited_for_then_refused(ray_session, autoscaler_config):
    started = time.monotonic()
    with pytest.raises(
        UserError,
        match=r"--use-gpu auto: 0 of the 1 GPU\(s\) a trial needs joined the cluster "
        r"within --gpu-wait 1 s",
    ):
        wait_for_gpus(1, timeout=1, use_gpu="auto", bootstrap_config=autoscaler_config)
    assert 1 <= time.monotonic() - started < 30
    wait_for_gpus(1, timeout=1, use_gpu="no", bootstrap_config=autoscaler_config)  # CPUs asked for: no wait
    wait_for_gpus(1, timeout=1, use_gpu="auto", bootstrap_config="/nonexistent.yaml")  # nothing to wait for


@pytest.mark.own_ray
def test_a_trial_of_two_gpus_waits_for_both(autoscaler_config):
    """One GPU up is not enough for `--workers-per-trial 2`: the wait goes on for the second (here it never comes)."""
    import ray

    ray.shutdown()  # a Ray of its own, with one (logical) GPU
    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(UserError, match=r"--use-gpu yes: 1 of the 2 GPU\(s\) a trial needs joined"):
            wait_for_gpus(2, timeout=1, use_gpu="yes", bootstrap_config=autoscaler_config)
        wait_for_gpus(
            1, timeout=1, use_gpu="yes", bootstrap_config=autoscaler_config
        )  # one is there: no wait
    finally:
        ray.shutdown()


def test_splits_too_big_for_the_object_store_are_streamed_from_their_shards(
    ray_session, imdb_sample, monkeypatch
):
    import pyarrow.parquet as pq

    monkeypatch.setattr(ingest, "IN_MEMORY_SHARE", 0.0)  # as if the splits were larger than the object store
    spec = DataSpec.from_prepared(imdb_sample).load()
    assert spec.datasets == {}
    streamed = spec.dataset("test").take_all()
    expected = [row for f in imdb_sample.files("test") for row in pq.read_table(f).to_pylist()]
    assert [list(r["ids"]) for r in streamed] == [r["ids"] for r in expected]  # every review, in file order
    assert [r["review"] for r in streamed] == [r["review"] for r in expected]  # each with its key


def test_read_tasks_hand_the_splits_to_ray_in_file_order(ray_session, imdb_sample):
    import pyarrow.parquet as pq

    loaded = DataSpec.from_prepared(imdb_sample).load(splits=("val",))
    assert set(loaded.datasets) == {"val"}
    rows = loaded.datasets["val"].to_arrow_refs()
    expected = [pq.read_table(f) for f in imdb_sample.files("val")]
    assert [ray_session.get(r)["ids"].to_pylist() for r in rows] == [t["ids"].to_pylist() for t in expected]
    assert "review" not in ray_session.get(rows[0]).column_names  # only the test split carries keys


def test_splits_are_read_where_no_whole_cpu_is_free(ray_session, imdb_sample):
    """Workers holding all but a fraction of every node's CPUs leave a whole-CPU task (Ray Data's file listing:
    `ray.data.read_parquet` here waits forever) pending; the read tasks fit beside them."""
    import threading

    counts = {}

    def read(local: bool) -> None:
        counts[local] = read_shards(imdb_sample.files("val"), local=local).materialize().count()

    with cpus_held(ray_session, 1.7):  # as Train workers would, on this 2-CPU node
        for local in (False, True):  # anywhere, and pinned to the node that holds the files
            thread = threading.Thread(target=read, args=(local,), daemon=True)
            thread.start()
            thread.join(timeout=120)
            assert counts.get(local) == imdb_sample.count("val"), f"local={local}: the read did not finish"
