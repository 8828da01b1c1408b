"""Bad input and impossible options: exit status 2 and one clear paragraph naming the culprit, no traceback."""

import pytest

from conftest import fails
from rnn_models.cli import main
from rnn_models.errors import UserError


@pytest.mark.parametrize(
    "option, message",
    [
        (["--archs", "mlp,transformer"], "--archs names unknown architecture(s) transformer"),
        (["--archs", "mlp,mlp"], "--archs repeats an architecture"),
        (["--epochs", "0"], "--epochs must be at least 1 (got 0)"),
        (["--batch-size", "-64"], "--batch-size must be at least 1 (got -64)"),
        (["--lr", "0"], "--lr must be positive (got 0.0)"),
        (["--lr", "-0.001"], "--lr must be positive (got -0.001)"),
        (["--dropout", "1.5"], "--dropout must be in [0, 1) (got 1.5)"),
        (["--use-gpu", "maybe"], "--use-gpu must be auto, yes or no (got 'maybe')"),
        (["--lr", "inf"], "--lr must be a finite number (got inf)"),
        (["--seed", "-1"], "--seed must be in [0, 4294967295] (got -1)"),
        (
            ["--max-len", "0"],
            "--max-len must be at least 1 (got 0)",
        ),  # refused even though --data makes it unused
        (
            ["--epochs", "ten"],
            "rnn-models train: argument --epochs: invalid int value: 'ten' (see rnn-models train --help)",
        ),
    ],
)
def test_bad_training_options(capsys, option, message):
    assert message in fails(capsys, "train", "--data", "unused", *option)


def test_a_command_line_mistake_is_one_line_not_the_usage(capsys):
    assert fails(capsys, "trian").count("\n") == 1


def test_debug_shows_the_traceback():
    with pytest.raises(UserError, match="--epochs must be at least 1"):
        main(["--debug", "train", "--epochs", "0"])


def test_data_that_was_never_prepared(capsys, tmp_path):
    assert "not a prepared data directory (no manifest.json)" in fails(
        capsys, "train", "--data", str(tmp_path)
    )


def test_more_workers_than_the_cluster_can_ever_provide(ray_session, imdb_sample, capsys, tmp_path):
    err = fails(
        capsys,
        "train",
        "--data",
        str(imdb_sample.root),
        "--storage",
        str(tmp_path),
        "--workers-per-trial",
        "16",
    )
    assert "--workers-per-trial 16 needs at least" in err and "the Ray cluster has 2" in err


def test_a_model_no_node_can_hold_is_refused_before_ray_starts(imdb_sample, capsys, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr("rnn_models.tuning.session.connect", never)
    err = fails(
        capsys,
        "train",
        "--data",
        str(imdb_sample.root),
        "--storage",
        str(tmp_path),
        "--archs",
        "mlp,lstm",
        "--hidden-size",
        "100000000",
    )
    assert (
        "mlp: its weights, gradients and Adam's two moments alone need 6,106.5 GiB, more than this machine"
        in err
    )
    assert "lower --hidden-size" in err


def test_a_storage_path_that_is_not_writable(ray_session, imdb_sample, capsys):
    err = fails(capsys, "train", "--data", str(imdb_sample.root), "--storage", "/etc/hostname/runs")
    assert "--storage /etc/hostname/runs: cannot write there" in err


def test_a_tampered_prepared_directory_is_refused(ray_session, imdb_sample, capsys, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(imdb_sample.root, copy)
    shard = sorted((copy / "train").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes() + b"extra")
    assert "does not match manifest.json" in fails(
        capsys, "train", "--data", str(copy), "--storage", str(tmp_path)
    )


def test_a_checkpoint_evaluated_on_another_vocabulary(
    ray_session, imdb_sample, imdb_medium, capsys, tmp_path
):
    from rnn_models.config import ModelConfig, TrainConfig
    from rnn_models.models import model_from_config
    from rnn_models.training.checkpoint import checkpoint_meta, save_checkpoint
    from rnn_models.training.ingest import DataSpec
    from rnn_models.training.loop import make_optimizer

    info = DataSpec.from_prepared(imdb_sample).info
    model = model_from_config(ModelConfig(arch="mlp"), info["vocab_size"], info["max_len"])
    save_checkpoint(
        tmp_path,
        model=model,
        optimizer=make_optimizer(model, TrainConfig()),
        scheduler=None,
        meta=checkpoint_meta(1, ModelConfig(arch="mlp"), TrainConfig(), info, []),
        vocab=imdb_sample.vocab,
    )
    err = fails(capsys, "evaluate", "--checkpoint", str(tmp_path), "--data", str(imdb_medium.root))
    assert (
        "the checkpoint was made for another configuration" in err
        and "data max_len: checkpoint 64, now 128" in err
    )
