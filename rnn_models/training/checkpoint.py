"""Checkpoints: `model.pt` (tensors only, loaded with weights_only=True), `meta.json` (configs, data
fingerprint, metric history) and `vocab.json`, so that a checkpoint alone can evaluate or predict.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.errors import UserError
from rnn_models.models import model_from_config

MODEL_FILE, META_FILE, VOCAB_FILE = "model.pt", "meta.json", "vocab.json"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP's wrapper (or the model itself)."""
    return getattr(model, "module", model)


def save_checkpoint(directory: str | Path, *, model: nn.Module, optimizer, scheduler, meta: dict,
                    vocab: list[str]) -> None:
    directory = Path(directory)
    state = {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict() if scheduler else {}}
    torch.save(state, directory / MODEL_FILE)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (directory / VOCAB_FILE).write_text(json.dumps(vocab, ensure_ascii=False) + "\n")


@dataclass
class Loaded:
    state: dict  # model, optimizer and scheduler state dicts
    meta: dict  # epoch, model, train, data, history
    vocab: list[str]

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(**self.meta["model"])

    def build_model(self) -> nn.Module:
        data = self.meta["data"]
        model = model_from_config(self.model_config, data["vocab_size"], data["max_len"])
        model.load_state_dict(self.state["model"])
        return model


def load_checkpoint(directory: str | Path) -> Loaded:
    """Read a checkpoint directory; tensors only (no pickled code runs: weights_only=True)."""
    directory = Path(directory)
    missing = [f for f in (MODEL_FILE, META_FILE, VOCAB_FILE) if not (directory / f).is_file()]
    if missing:
        raise UserError(f"--checkpoint {directory}: not a checkpoint of this tool (missing {', '.join(missing)})")
    try:
        state = torch.load(directory / MODEL_FILE, map_location="cpu", weights_only=True)
        meta = json.loads((directory / META_FILE).read_text())
        vocab = json.loads((directory / VOCAB_FILE).read_text())
        ModelConfig(**meta["model"]), TrainConfig(**meta["train"])  # complete, and valid options
        missing = {"epoch", "history", "data"} - set(meta) or {"vocab_size", "max_len", "vocab_sha256"} - set(meta["data"])
    except Exception as e:  # torch raises several types for damaged or unsafe files
        raise UserError(f"--checkpoint {directory}: unreadable ({e})") from e
    if missing or "model" not in state:
        raise UserError(f"--checkpoint {directory}: incomplete ({', '.join(sorted(missing)) or 'no model weights'})")
    return Loaded(state, meta, vocab)


def checkpoint_meta(epoch: int, model_cfg: ModelConfig, train_cfg: TrainConfig, data: dict, history: list[dict]) -> dict:
    return {"epoch": epoch, "model": asdict(model_cfg), "train": asdict(train_cfg), "data": data, "history": history}


def require_compatible(loaded: Loaded, model_cfg: ModelConfig, data: dict, where: str) -> None:
    """Refuse a checkpoint whose model or vocabulary differs from what it is about to be used with."""
    mismatches = [f"model {k}: checkpoint {v!r}, now {getattr(model_cfg, k)!r}"
                  for k, v in loaded.meta["model"].items() if getattr(model_cfg, k) != v]
    mismatches += [f"data {k}: checkpoint {loaded.meta['data'].get(k)!r}, now {data[k]!r}"
                   for k in ("vocab_sha256", "vocab_size", "max_len") if loaded.meta["data"].get(k) != data[k]]
    if mismatches:
        raise UserError(f"{where}: the checkpoint was made for another configuration ({'; '.join(mismatches)})")
