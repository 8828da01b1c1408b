"""Presets: named bundles of options for `prepare`, the models and training, per architecture where needed.

A preset is a JSON object (a built-in below, or a file, such as the one `rnn-models tune` writes):

    {"name": "...", "about": "...",
     "prepare": {PrepareConfig fields}, "model": {ModelConfig fields}, "train": {TrainConfig fields},
     "archs": {"lstm": {"model": {...}, "train": {...}}, ...}}

A run trains a `Recipe`: a preset and the options given on the command line, which override the preset for
every architecture. `Recipe.resolve` is the one place where options are merged.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from rnn_models.config import ARCHS, ModelConfig, PrepareConfig, TrainConfig
from rnn_models.errors import UserError
from rnn_models.files import write_json
from rnn_models.validation import key_path, typed

SECTIONS = {"prepare": PrepareConfig, "model": ModelConfig, "train": TrainConfig}
# What a preset may set of `prepare`: the tokenisation, and the size of the val (dev) split its choices read
PREPARE_KEYS = ("vocab_size", "max_len", "strip_br", "val_size")

NOTEBOOK = {"vocab_size": 1024, "max_len": 64, "strip_br": False}  # the notebook's tokens and review length

BUILTIN = {
    "seed": {
        "about": "the notebook's recipe: Adam 1e-4, batch 64, 10 epochs, 1,024 tokens, reviews cut to 64, Axon's "
        "initial weights, its LSTMs (one bias vector per gate, a random initial state), the train reviews "
        "shuffled once and read in that order every epoch, the weights after the last epoch tested; the "
        "hand-rolled BiLSTM's unmasked LSTMs read padding (its backward one, the padding first). The bilstm "
        "row is this project's fused BiLSTM under that recipe: the notebook's Axon.bidirectional model never "
        "compiled",
        "prepare": NOTEBOOK,
        "model": {"seed_faithful": True, "init": "axon", "lstm_bias": "one", "initial_state": "axon"},
        "train": {"test_checkpoint": "last", "shuffle_buffer": 0},
    },
    "seed-fixed": {
        "about": "the seed preset with only the notebook's mistakes fixed: learning rate 1e-3 instead of 1e-4, the "
        "hand-rolled backward LSTM reading each review back to front from its last real token",
        "prepare": NOTEBOOK,
        "model": {"seed_faithful": False, "init": "axon", "lstm_bias": "one", "initial_state": "axon"},
        "train": {"lr": 1e-3, "test_checkpoint": "last", "shuffle_buffer": 0},
    },
    "tuned": {
        "about": "what these architectures can do from scratch: 20,000 tokens, reviews up to 400 tokens, <br /> "
        "stripped, dropout 0.3, AdamW 2e-3 with a warm-up epoch and cosine decay, gradient clipping, "
        "early stopping on val accuracy",
        "prepare": {"vocab_size": 20000, "max_len": 400, "strip_br": True},
        "model": {
            "embedding_size": 64,
            "hidden_size": 64,
            "dropout": 0.3,
            "merge": "concat",
            "seed_faithful": False,
        },
        "train": {
            "lr": 2e-3,
            "weight_decay": 0.01,
            "lr_schedule": "cosine",
            "grad_clip": 1.0,
            "epochs": 6,
            "patience": 2,
        },
    },
    "frontier": {
        "about": "whole reviews (up to 1,000 tokens, 99.9 % of them uncut) at the cost of their real length "
        "(length-bucketed batches), 30,000 tokens, Axon's initial weights; the RNNs 128 wide, reading each "
        "token with its hashed bigram, pooling max and mean over every step, with word dropout and "
        "adversarial training on the embeddings (the BiLSTMs' heads leaky ReLUs); the MLP a bag of tokens and hashed bigrams; AdamW with a "
        "short warm-up and cosine decay over 2 epochs. Choices measured: README, Results",
        "prepare": {"vocab_size": 30000, "max_len": 1000, "strip_br": True, "val_size": 5000},
        "model": {
            "embedding_size": 128,
            "hidden_size": 128,
            "dropout": 0.3,
            "merge": "concat",
            "readout": "pool",
            "init": "axon",
            "token_dropout": 0.15,
            "bigram_buckets": 262144,
        },
        "train": {
            "lr": 3e-3,
            "weight_decay": 0.01,
            "lr_schedule": "cosine",
            "warmup": 0.3,
            "grad_clip": 1.0,
            "epochs": 2,
            "bucket_batches": 50,
            "adversarial": 0.05,
        },
        "archs": {
            "mlp": {
                "model": {"pooling": "mean", "embedding_size": 64, "hidden_size": 64},
                "train": {"lr": 2e-3, "adversarial": 0.0},
            },
            # Their ReLU heads died in epoch 1 (dev 50.00 %, constant logits): the hand-rolled one's in the seed-0
            # run, the fused one's in its dev ablation, where the leaky head reached 90.84 %: docs/results.md
            "bilstm": {"model": {"head_activation": "leaky_relu"}},
            "handrolled_bilstm": {"model": {"head_activation": "leaky_relu"}},
        },
    },
}


@dataclass(frozen=True)
class Preset:
    name: str
    about: str = ""
    prepare: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    archs: dict = field(default_factory=dict)  # arch -> {"model": {...}, "train": {...}}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "arch")
TRAIN_KEYS = tuple(
    f.name for f in dataclasses.fields(TrainConfig)
)  # no name is both a model and a train option


@dataclass(frozen=True)
class Recipe:
    """What a run's trials train: a preset, and the options given on the command line ({option: value}, model
    and training options alike), which win over the preset for every architecture."""

    preset: Preset = field(
        default_factory=lambda: Preset("defaults")
    )  # no preset: the config dataclasses' defaults
    options: dict = field(default_factory=dict)

    def resolve(self, arch: str, sampled: dict | None = None) -> tuple[ModelConfig, TrainConfig]:
        """The configs of `arch`, the one merge of options: the preset's, its values for `arch`, the command
        line's, then a search's `sampled` values, each winning over the ones before."""
        own = self.preset.archs.get(arch, {})
        values = {
            **self.preset.model,
            **self.preset.train,
            **own.get("model", {}),
            **own.get("train", {}),
            **self.options,
            **(sampled or {}),
        }
        unknown = sorted(set(values) - set(MODEL_KEYS) - set(TRAIN_KEYS))
        if unknown:
            raise UserError(
                f"unknown option(s) {', '.join(unknown)}; known: {', '.join(MODEL_KEYS + TRAIN_KEYS)}"
            )
        return (
            ModelConfig(arch=arch, **{k: v for k, v in values.items() if k in MODEL_KEYS}),
            TrainConfig(**{k: v for k, v in values.items() if k in TRAIN_KEYS}),
        )

    def as_dict(self) -> dict:
        return {"preset": self.preset.as_dict(), "options": self.options}

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        return cls(Preset(**data["preset"]), data["options"])


def load_preset(name_or_path: str) -> Preset:
    """A built-in preset by name, or a preset JSON file; bad keys, types and values are refused, naming the
    file and the key path (`train.lr: expected a number, got "fast"`)."""
    if name_or_path in BUILTIN:
        return _checked({"name": name_or_path, **BUILTIN[name_or_path]}, f"preset {name_or_path}")
    path = Path(name_or_path)
    if not path.is_file():
        raise UserError(
            f"--preset {name_or_path}: neither a built-in preset ({', '.join(BUILTIN)}) nor a file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--preset {path}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict):
        raise UserError(f'--preset {path}: expected a JSON object such as {{"train": {{"lr": 0.001}}}}')
    return _checked({"name": path.stem, **data}, str(path))


def save_preset(preset: Preset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, preset.as_dict())


@dataclass(frozen=True)
class ArchValues:
    """What `archs.<arch>` of a preset may hold."""

    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


def _checked(data: dict, where: str) -> Preset:
    """The preset `data`, every key, type and value checked against the config dataclasses."""
    preset = typed(Preset, data, where)
    for section, cls in SECTIONS.items():
        typed(cls, getattr(preset, section), where, section, keys=_keys(cls))
    for arch, own in preset.archs.items():
        if arch not in ARCHS:
            raise UserError(
                f"{where}: {key_path('archs', arch)}: unknown architecture (known: {', '.join(ARCHS)})"
            )
        own = typed(ArchValues, own, where, f"archs.{arch}")
        typed(ModelConfig, own.model, where, f"archs.{arch}.model", keys=_keys(ModelConfig))
        typed(TrainConfig, own.train, where, f"archs.{arch}.train", keys=_keys(TrainConfig))
    return preset


def _keys(cls) -> tuple[str, ...]:
    """What a preset may set of `cls`: of `prepare`, the tokenisation and val size; of `model`, all but the arch."""
    return (
        PREPARE_KEYS
        if cls is PrepareConfig
        else tuple(f.name for f in dataclasses.fields(cls) if f.name != "arch")
    )
