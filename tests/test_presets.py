"""Presets: the built-ins, files, precedence of the command line, and refusal of bad presets."""

import json

import pytest

from rnn_models.cli import default_data_dir, main
from rnn_models.config import ARCHS
from rnn_models.errors import UserError
from rnn_models.presets import BUILTIN, Preset, load_preset, save_preset


@pytest.mark.parametrize("name", list(BUILTIN))
def test_builtin_presets_resolve_for_every_architecture(name):
    preset = load_preset(name)
    for arch in ARCHS:
        model, train = preset.resolve(arch)
        assert model.arch == arch and train.epochs >= 1


def test_what_each_builtin_preset_sets():
    seed, fixed, tuned = (load_preset(n) for n in ("seed", "seed-fixed", "tuned"))
    assert seed.resolve("lstm")[0].seed_faithful and seed.resolve("lstm")[1].lr == 1e-4
    assert not fixed.resolve("lstm")[0].seed_faithful and fixed.resolve("lstm")[1].lr == 1e-3
    assert seed.prepare == fixed.prepare == {"vocab_size": 1024, "max_len": 64, "strip_br": False}
    assert tuned.prepare["vocab_size"] > 1024 and tuned.prepare["strip_br"]


def test_command_line_values_override_the_preset_and_its_per_arch_values():
    preset = Preset("p", model={"dropout": 0.2}, train={"lr": 0.01}, archs={"lstm": {"model": {"dropout": 0.4}}})
    assert preset.resolve("mlp")[0].dropout == 0.2 and preset.resolve("lstm")[0].dropout == 0.4
    model, train = preset.resolve("lstm", model={"dropout": 0.1}, train={"lr": 0.5})
    assert model.dropout == 0.1 and train.lr == 0.5


def test_a_preset_file_round_trips(tmp_path):
    preset = Preset("mine", about="x", prepare={"vocab_size": 5000, "max_len": 128, "strip_br": True},
                    train={"epochs": 3}, archs={"bilstm": {"model": {"hidden_size": 128}, "train": {"lr": 0.002}}})
    save_preset(preset, tmp_path / "mine.json")
    assert load_preset(str(tmp_path / "mine.json")) == preset


@pytest.mark.parametrize("content, message", [
    ({"trian": {}}, "unknown key(s) trian"),
    ({"train": {"learning_rate": 1}}, "unknown option(s) learning_rate"),
    ({"train": {"lr": -1}}, "--lr must be positive (got -1)"),
    ({"prepare": {"val_size": 10}}, "unknown option(s) val_size"),
    ({"archs": {"gru": {}}}, "unknown architecture 'gru'"),
    ({"archs": {"lstm": {"optim": {}}}}, "unknown section 'optim'"),
])
def test_bad_preset_files_are_refused_with_the_reason(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_preset(str(path))


def test_an_unknown_preset_name_exits_2(capsys):
    assert main(["train", "--preset", "fast"]) == 2
    assert "--preset fast: neither a built-in preset (seed, seed-fixed, tuned) nor a file" in capsys.readouterr().err


def test_each_way_of_preparing_gets_its_own_data_folder():
    assert default_data_dir({"vocab_size": 1024, "max_len": 64}) == "data/prepared-k1024-t64"
    assert default_data_dir({"vocab_size": 20000, "max_len": 400, "strip_br": True, "max_reviews_per_split": 300}) \
        == "data/prepared-k20000-t400-nobr-n300"
    assert default_data_dir({"vocab_size": 1024, "max_len": 64, "seed": 3, "val_size": 500}) \
        == "data/prepared-k1024-t64-v500-s3"


def test_train_all_prepares_the_default_source_only_without_source_or_data(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "jobs" / "train_all.py"), "--data", str(tmp_path), "--epochs", "0"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and "--epochs must be at least 1" in done.stderr and "hf:" not in done.stderr
