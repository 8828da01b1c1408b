"""Test accuracy of a checkpoint on the held-out test split (after training, and `rnn-models evaluate`)."""

from pathlib import Path

import ray.train
import torch

from rnn_models.errors import UserError
from rnn_models.training.checkpoint import Loaded, load_checkpoint, require_compatible
from rnn_models.training.ingest import DataSpec, torch_batches
from rnn_models.training.loop import Sums, evaluate


def open_checkpoint(path: str) -> Loaded:
    """A checkpoint from a local directory or any URI Ray storage accepts (s3://, gs://, file://)."""
    if "://" not in path and not Path(path).is_dir():
        raise UserError(f"--checkpoint {path}: no such directory")
    with ray.train.Checkpoint(path).as_directory() as directory:
        return load_checkpoint(directory)


def test_checkpoint(loaded: Loaded, data: DataSpec, split: str = "test", threads: int | None = None) -> Sums:
    """Loss and accuracy of `loaded` over every review of `split`, on the CPU."""
    require_compatible(loaded, loaded.model_config, data.info, f"--data ({split} split)")
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cpu")
    return evaluate(loaded.build_model(), torch_batches(data.dataset(split), 512, device), device)
