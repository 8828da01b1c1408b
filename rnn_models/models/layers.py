"""Layers every architecture shares: the dense ending and the hashed bigram ids of the token inputs."""

import torch
from torch import nn


class DenseHead(nn.Module):
    """Features (B, F) → one logit per review (B,): Linear(F, H) ReLU [Dropout] Linear(H, 1)."""

    def __init__(self, in_features: int, hidden_size: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_features, hidden_size)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(dropout)  # p=0 (the notebook) is the identity
        self.out = nn.Linear(hidden_size, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.relu(self.dense(features)))  # (B, H)
        return self.out(x).squeeze(-1)  # (B,)


BIGRAM_PRIME = 1_000_003  # mixes the first id into the bigram's hash; any large odd constant would do


def bigram_ids(ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """Hashed bigram of each pair of neighbouring ids, in [0, buckets): (B, T-1), int64. Deterministic: the
    same pair gets the same row on every run and rank."""
    ids = ids.long()
    return (ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:]) % buckets
