"""Prepared data in a bucket (an S3 API served by moto on loopback): written, verified, reused and read back."""

import pyarrow.parquet as pq
import pytest
import ray

from cluster_harness import MotoS3
from conftest import fails
from rnn_models.config import PrepareConfig
from rnn_models.data.prepare import prepare
from rnn_models.data.prepared import open_prepared
from rnn_models.errors import UserError
from rnn_models.training.ingest import DataSpec

pytestmark = pytest.mark.own_ray  # a Ray whose tasks see the bucket's endpoint

SMALL = dict(max_reviews_per_split=100, val_size=20, max_len=32)


@pytest.fixture(scope="module")
def s3_env():
    """The bucket's endpoint and keys in this process's environment and in the Ray started after it: Ray Data
    tasks read the bucket too, as every node of a cluster does with its own credentials."""
    with MotoS3() as server, pytest.MonkeyPatch.context() as patch:
        for key, value in server.env.items():
            patch.setenv(key, value)
        ray.shutdown()
        yield server
        ray.shutdown()


def test_prepare_into_a_bucket_gives_the_same_shards_as_a_local_folder(
    ray_session, s3_env, imdb_path, tmp_path
):
    url = f"{s3_env.url}/prepared"
    remote = prepare(PrepareConfig(source=str(imdb_path), out=url, **SMALL))
    local = prepare(PrepareConfig(source=str(imdb_path), out=str(tmp_path / "local"), **SMALL))
    assert (
        remote.root == url
        and remote.fingerprint == local.fingerprint
        and remote.manifest["splits"] == local.manifest["splits"]
    )
    listed = s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix="prepared/")["Contents"]
    keys = sorted(o["Key"] for o in listed if not o["Key"].endswith("/"))  # pyarrow marks folders with "…/"
    assert keys == sorted(
        ["prepared/manifest.json", "prepared/vocab.json"]
        + [f"prepared/{name}" for s in ("train", "val", "test") for name in local.names(s)]
    )
    # read by Ray Data tasks into the object store, as a run does
    loaded = DataSpec.from_prepared(open_prepared(url)).load()
    for split in ("train", "val", "test"):
        expected = pq.read_table([f for f in local.files(split)][0]).schema
        rows = loaded.datasets[split].to_arrow_refs()
        tables = [ray_session.get(r) for r in rows]
        assert tables[0].schema.equals(expected)
        assert ("review" in expected.names) == (split == "test")  # test: each review's key
        assert sum(t.num_rows for t in tables) == local.count(split)
        assert [t["ids"].to_pylist() for t in tables] == [
            pq.read_table(f)["ids"].to_pylist() for f in local.files(split)
        ]


def test_a_bucket_that_already_holds_the_data_is_reused_and_a_changed_shard_refused(
    ray_session, s3_env, imdb_path
):
    url = f"{s3_env.url}/reused"
    first = prepare(PrepareConfig(source=str(imdb_path), out=url, **SMALL))
    created = first.manifest["created"]
    assert prepare(PrepareConfig(source=str(imdb_path), out=url, **SMALL)).manifest["created"] == created
    name = first.names("val")[0]
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=f"reused/{name}", Body=b"not parquet")
    with pytest.raises(UserError, match=f"{url}: {name} does not match manifest.json"):
        open_prepared(url)
    rebuilt = prepare(PrepareConfig(source=str(imdb_path), out=url, **SMALL), force=True)
    assert open_prepared(url).manifest["splits"] == rebuilt.manifest["splits"]


def test_an_unreachable_bucket_is_a_clear_error(capsys, s3_env, tmp_path):
    err = fails(capsys, "train", "--data", "s3://no-such-bucket/prepared", "--storage", str(tmp_path))
    assert (
        "--data s3://no-such-bucket/prepared: not a prepared data directory" in err or "cannot be read" in err
    )
