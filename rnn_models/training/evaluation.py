"""Accuracy of a checkpoint on a prepared split (`rnn-models evaluate`; after training, the workers score the test
split themselves, training/worker.py)."""

import torch

from rnn_models.models import takes_any_length
from rnn_models.training.checkpoint import Loaded, require_compatible
from rnn_models.training.ingest import DataSpec, scoring_batches
from rnn_models.training.loop import Sums, evaluate


def score_checkpoint(loaded: Loaded, data: DataSpec, split: str = "test") -> Sums:
    """Loss and accuracy of `loaded` over every review of `split`, on a GPU if this process has one."""
    require_compatible(loaded, loaded.model_config, data.info, f"--data ({split} split)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = loaded.model.to(device)
    batches = scoring_batches(data.dataset(split), device, takes_any_length(loaded.model_config))
    return evaluate(model, batches, device)
