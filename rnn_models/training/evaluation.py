"""Test accuracy of a checkpoint on the held-out test split (after training, and `rnn-models evaluate`)."""

from pathlib import Path

import pyarrow
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
    try:
        with ray.train.Checkpoint(path).as_directory() as directory:
            return load_checkpoint(directory)
    except (OSError, ValueError, pyarrow.ArrowException) as e:  # an unreachable or empty URI
        raise UserError(f"--checkpoint {path}: cannot be read ({e})") from e


def score_checkpoint(loaded: Loaded, data: DataSpec, split: str = "test", threads: int | None = None) -> Sums:
    """Loss and accuracy of `loaded` over every review of `split`, on a GPU if this process has one."""
    require_compatible(loaded, loaded.model_config, data.info, f"--data ({split} split)")
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = loaded.build_model().to(device)
    return evaluate(model, torch_batches(data.dataset(split), 512, device), device)
