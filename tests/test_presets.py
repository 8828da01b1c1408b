"""Presets: the built-ins, files, precedence of the command line, and refusal of bad presets."""

import json
import os

import pytest

from rnn_models.cli import main
from rnn_models.config import ARCHS
from rnn_models.data.prepare import default_data_dir
from rnn_models.errors import UserError
from rnn_models.presets import BUILTIN, Preset, Recipe, load_preset, save_preset


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_presets_resolve_for_every_architecture(name):
    preset = load_preset(name)
    for arch in ARCHS:
        model, train = Recipe(preset).resolve(arch)
        assert model.arch == arch and train.epochs >= 1


def test_what_each_builtin_preset_sets():
    seed, fixed, tuned, frontier = (
        Recipe(load_preset(n)) for n in ("seed", "seed-fixed", "tuned", "frontier")
    )
    (seed_model, seed_train), (fixed_model, fixed_train) = (
        seed.resolve("handrolled_bilstm"),
        fixed.resolve("handrolled_bilstm"),
    )
    assert seed_model.seed_faithful and seed_train.lr == 1e-4 and seed_train.test_checkpoint == "last"
    assert not fixed_model.seed_faithful and fixed_train.lr == 1e-3
    # the two differ by their fixes only, for every architecture: the notebook's weights, LSTMs, data order
    # and last epoch tested in both
    for arch in ARCHS:
        (a_model, a_train), (b_model, b_train) = seed.resolve(arch), fixed.resolve(arch)
        differ = {
            name
            for a, b in ((a_model, b_model), (a_train, b_train))
            for name, value in vars(a).items()
            if getattr(b, name) != value
        }
        assert differ == {"lr", "seed_faithful"}, arch
    assert (seed_model.init, seed_model.lstm_bias, seed_model.initial_state) == ("axon", "one", "axon")
    assert seed_train.shuffle_buffer == 0 and fixed_train.test_checkpoint == "last"
    assert seed.resolve("lstm")[0].readout == "last"  # the notebook's masked LSTM reads the last real token
    assert (
        seed.preset.prepare == fixed.preset.prepare == {"vocab_size": 1024, "max_len": 64, "strip_br": False}
    )
    assert tuned.preset.prepare["vocab_size"] > 1024 and tuned.preset.prepare["strip_br"]
    assert frontier.resolve("mlp")[0].pooling == "mean" and frontier.resolve("mlp")[0].bigram_buckets > 0
    assert all(frontier.resolve(a)[0].readout == "pool" for a in ("lstm", "bilstm", "handrolled_bilstm"))
    assert frontier.resolve("lstm")[1].bucket_batches > 0 and frontier.preset.prepare["max_len"] >= 1000


def test_command_line_values_override_the_preset_and_its_per_arch_values_and_sampled_ones_all():
    preset = Preset(
        "p", model={"dropout": 0.2}, train={"lr": 0.01}, archs={"lstm": {"model": {"dropout": 0.4}}}
    )
    assert (
        Recipe(preset).resolve("mlp")[0].dropout == 0.2 and Recipe(preset).resolve("lstm")[0].dropout == 0.4
    )
    recipe = Recipe(preset, {"dropout": 0.1, "lr": 0.5})
    model, train = recipe.resolve("lstm")
    assert model.dropout == 0.1 and train.lr == 0.5
    model, train = recipe.resolve("lstm", {"lr": 0.2, "hidden_size": 8})  # a search's sampled values win
    assert (model.dropout, model.hidden_size, train.lr) == (0.1, 8, 0.2)
    with pytest.raises(UserError, match="unknown option.*momentum"):
        recipe.resolve("lstm", {"momentum": 0.9})
    assert Recipe.from_dict(json.loads(json.dumps(recipe.as_dict()))) == recipe  # as a run folder keeps it


def test_a_preset_file_round_trips(tmp_path):
    preset = Preset(
        "mine",
        about="x",
        prepare={"vocab_size": 5000, "max_len": 128, "strip_br": True},
        train={"epochs": 3},
        archs={"bilstm": {"model": {"hidden_size": 128}, "train": {"lr": 0.002}}},
    )
    save_preset(preset, tmp_path / "mine.json")
    assert load_preset(str(tmp_path / "mine.json")) == preset


@pytest.mark.parametrize(
    "content, message",
    [
        ({"trian": {}}, "trian: unknown key (allowed: name, about, prepare, model, train, archs)"),
        ({"train": {"learning_rate": 1}}, "train.learning_rate: unknown key (allowed in train: epochs,"),
        ({"train": {"lr": -1}}, "train.lr: must be positive (got -1.0)"),
        ({"name": "x", "train": {"lr": "fast"}}, 'train.lr: expected a number, got "fast"'),
        ({"train": {"epochs": True}}, "train.epochs: expected an integer, got true"),
        ({"model": {"arch": "mlp"}}, "model.arch: unknown key"),
        (
            {"prepare": {"seed": 10}},
            "prepare.seed: unknown key (allowed in prepare: vocab_size, max_len, val_size, strip_br)",
        ),
        ({"archs": {"gru": {}}}, "archs.gru: unknown architecture"),
        (
            {"archs": {"lstm": {"optim": {}}}},
            "archs.lstm.optim: unknown key (allowed in archs.lstm: model, train)",
        ),
        (
            {"archs": {"lstm": {"model": {"dropout": "high"}}}},
            'archs.lstm.model.dropout: expected a number, got "high"',
        ),
        ({"archs": []}, "archs: expected an object, got []"),
    ],
)
def test_bad_preset_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError) as e:
        load_preset(str(path))
    assert str(e.value).startswith(f"{path}: {message}")


def test_an_unknown_preset_name_exits_2(capsys):
    assert main(["train", "--preset", "fast"]) == 2
    assert (
        "--preset fast: neither a built-in preset (seed, seed-fixed, tuned, frontier) nor a file"
        in capsys.readouterr().err
    )


def test_each_way_of_preparing_gets_its_own_data_folder():
    assert default_data_dir({"vocab_size": 1024, "max_len": 64}) == "data/prepared-k1024-t64"
    assert (
        default_data_dir(
            {"vocab_size": 20000, "max_len": 400, "strip_br": True, "max_reviews_per_split": 300}
        )
        == "data/prepared-k20000-t400-nobr-n300"
    )
    assert (
        default_data_dir({"vocab_size": 1024, "max_len": 64, "seed": 3, "val_size": 500})
        == "data/prepared-k1024-t64-v500-s3"
    )


def test_train_all_prepares_the_default_source_only_without_source_or_data(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    def train_all(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(REPO / "jobs" / "train_all.py"), *args, "--storage", str(tmp_path / "runs")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        )
        assert done.returncode == 2, done.stderr[-2000:]
        return done.stderr

    assert "not a prepared data directory" in train_all("--data", str(tmp_path))  # read, no source prepared
    assert "hf:stanfordnlp/imdb" in train_all()  # the default source, which needs the hub: refused offline
