"""Checkpoints: `model.pt` (tensors only, loaded with weights_only=True), `meta.json` (configs, data
fingerprint, metric history) and `vocab.json`, so that a checkpoint alone can evaluate or predict. The tested
checkpoint also holds `test_predictions.parquet`: each test review's key (data/prepared.py), label and logit (the
review is scored positive where it is above 0), by which `compare` pairs two models scored on the same reviews.
"""

import json
import tempfile
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq
import torch
from torch import nn

from rnn_models.config import ModelConfig, PrepareConfig, TrainConfig
from rnn_models.errors import UserError, reason
from rnn_models.models import model_from_config
from rnn_models.stats import PREDICTIONS_FILE
from rnn_models.storage import Storage, is_uri
from rnn_models.validation import CheckpointMeta, document, typed

MODEL_FILE, META_FILE, VOCAB_FILE = "model.pt", "meta.json", "vocab.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP's wrapper (or the model itself)."""
    return getattr(model, "module", model)


def save_checkpoint(
    directory: str | Path,
    *,
    model: nn.Module,
    optimizer,
    scheduler,
    meta: dict,
    vocab: list[str],
    tested: dict | None = None,
    predictions: pyarrow.Table | None = None,
) -> None:
    """`tested`: an earlier epoch's weights, the ones the test split will score (kept for a restart);
    `predictions`: the test split's, by the weights saved."""
    directory = Path(directory)
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer else {},
        "scheduler": scheduler.state_dict() if scheduler else {},
    }
    if tested is not None:
        state["tested"] = tested
    torch.save(state, directory / MODEL_FILE)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (directory / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    if predictions is not None:
        pq.write_table(predictions, directory / PREDICTIONS_FILE)


@dataclass
class Loaded:
    state: dict  # model, optimizer and scheduler state dicts (and "tested": an earlier epoch's model)
    meta: dict  # epoch, model, train, data, history
    vocab: list[str]

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.meta["model"])

    @cached_property
    def model(self) -> nn.Module:
        """The model with the checkpoint's weights (built once: loading checks it, its users share it)."""
        data = self.meta["data"]
        model = model_from_config(self.model_config, data["vocab_size"], data["max_len"])
        model.load_state_dict(self.state["model"])
        return model


def load_checkpoint(directory: str | Path) -> Loaded:
    """Read a checkpoint directory; tensors only (no pickled code runs: weights_only=True). meta.json is
    checked key by key against the config dataclasses, and the weights against the model it describes."""
    directory = Path(directory)
    missing = [f for f in (MODEL_FILE, META_FILE, VOCAB_FILE) if not (directory / f).is_file()]
    if missing:
        raise UserError(
            f"--checkpoint {directory}: not a checkpoint of this tool (missing {', '.join(missing)})"
        )
    try:
        state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for damaged or unsafe files
        raise UserError(f"--checkpoint {directory / MODEL_FILE}: unreadable ({reason(e)})") from e
    meta, vocab = _read_json(directory / META_FILE), _read_json(directory / VOCAB_FILE)
    _check_meta(meta, vocab, f"--checkpoint {directory / META_FILE}")
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"--checkpoint {directory}: incomplete (no model weights in {MODEL_FILE})")
    for weights in ("model", "tested"):
        if isinstance(state.get(weights), dict):
            state[weights] = _token_tables_moved(state[weights], meta["model"]["arch"])
    loaded = Loaded(state, meta, vocab)
    try:
        loaded.model  # noqa: B018  (built here: a mismatch is the checkpoint's fault, named as such)
    except (
        RuntimeError,
        TypeError,
        KeyError,
        AttributeError,
    ) as e:  # load_state_dict: missing or misshapen tensors
        raise UserError(
            f"--checkpoint {directory}: {MODEL_FILE} does not match the model in {META_FILE} ({reason(e)})"
        ) from e
    return loaded


def _token_tables_moved(weights: dict, arch: str) -> dict:
    """The weights of a recurrent model saved before its token tables moved into `inputs` (`TokenInputs`), under
    today's names; any other weights as they are (the MLPs keep their tables at the top)."""
    if arch == "mlp":
        return weights
    tables = ("embedding.", "bigram_embedding.")
    return {f"inputs.{k}" if k.startswith(tables) else k: v for k, v in weights.items()}


def open_checkpoint(path: str) -> Loaded:
    """A checkpoint from a local directory or a URI (s3://, gs://, file://): its three files, no Ray needed."""
    if not is_uri(path):
        if not Path(path).is_dir():
            raise UserError(f"--checkpoint {path}: no such directory")
        return load_checkpoint(path)
    folder = Storage(path, option="--checkpoint")
    with tempfile.TemporaryDirectory(prefix="rnn-models-checkpoint-") as local:
        try:
            for name in (MODEL_FILE, META_FILE, VOCAB_FILE):
                if folder.is_file(name):  # a missing one is named by load_checkpoint
                    folder.download(Path(local) / name, name)
        except (OSError, pyarrow.ArrowException) as e:  # an unreachable bucket, missing credentials
            raise UserError(f"--checkpoint {path}: cannot be read ({reason(e)})") from e
        try:
            return load_checkpoint(local)
        except UserError as e:  # say where the checkpoint is, not where it was copied to
            raise UserError(str(e).replace(local, folder.root)) from e


def read_meta(path: str) -> dict:
    """A checkpoint's meta.json alone, from a folder or a URI: its configs and history, no weights fetched."""
    try:
        return json.loads(Storage(path, option="--checkpoint").read(META_FILE))
    except (OSError, pyarrow.ArrowException, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--checkpoint {path}: no readable {META_FILE} ({reason(e)})") from e


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"--checkpoint {path}: not a readable JSON file ({reason(e)})") from e


def _check_meta(meta, vocab, where: str) -> None:
    """Types, ranges and unknown keys of meta.json's model and train; what readers use of the rest."""
    document(CheckpointMeta, meta, where)
    typed(ModelConfig, meta["model"], where, "model")
    typed(TrainConfig, meta["train"], where, "train")
    data = meta["data"]
    typed(PrepareConfig, {k: data[k] for k in ("vocab_size", "max_len")}, where, "data")
    # More tokens than the embedding has rows would index past it.
    if (
        not isinstance(vocab, list)
        or not all(isinstance(t, str) for t in vocab)
        or len(vocab) > data["vocab_size"]
    ):
        raise UserError(
            f"{where}: data.vocab_size is {data['vocab_size']}, but {VOCAB_FILE} is not a list of at "
            "most that many tokens"
        )


def checkpoint_meta(
    epoch: int, model_cfg: ModelConfig, train_cfg: TrainConfig, data: dict, history: list[dict]
) -> dict:
    return {
        "epoch": epoch,
        "model": asdict(model_cfg),
        "train": asdict(train_cfg),
        "data": data,
        "history": history,
    }


def require_compatible(loaded: Loaded, model_cfg: ModelConfig, data: dict, where: str) -> None:
    """Refuse a checkpoint whose model or vocabulary differs from what it is about to be used with."""
    mismatches = [
        f"model {k}: checkpoint {v!r}, now {getattr(model_cfg, k)!r}"
        for k, v in loaded.meta["model"].items()
        if getattr(model_cfg, k) != v
    ]
    mismatches += [
        f"data {k}: checkpoint {loaded.meta['data'].get(k)!r}, now {data[k]!r}"
        for k in ("vocab_sha256", "vocab_size", "max_len")
        if loaded.meta["data"].get(k) != data[k]
    ]
    if mismatches:
        raise UserError(
            f"{where}: the checkpoint was made for another configuration ({'; '.join(mismatches)})"
        )
