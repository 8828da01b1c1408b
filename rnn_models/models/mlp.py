"""The notebook's benchmark: embed every position, flatten, one hidden dense layer, one logit.

It also owns `DenseHead`, the dense(H, relu) → dense(1) ending that every architecture shares.
"""

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


class MLP(nn.Module):
    """Embedding(K+2, E) → flatten (B, T·E) → Linear(T·E, H) ReLU → Linear(H, 1).

    `lengths` is accepted for the shared signature and ignored: the MLP sees padding as ordinary
    tokens (as in the notebook), and its first dense layer fixes T to `max_len`. `seed_faithful`
    has no effect here, there is no readout to choose.
    """

    def __init__(self, vocab_size: int, max_len: int, embedding_size: int = 64, hidden_size: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        self.max_len = max_len
        # K vocabulary tokens + id 0 (padding) + id 1 (out-of-vocabulary); no padding_idx, like Axon
        self.embedding = nn.Embedding(vocab_size + 2, embedding_size)
        self.embedding_dropout = nn.Dropout(dropout)
        self.flatten = nn.Flatten()
        self.head = DenseHead(max_len * embedding_size, hidden_size, dropout)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape[1] != self.max_len:
            raise ValueError(f"the mlp needs ids of shape (B, {self.max_len}) (max_len), got {tuple(ids.shape)}")
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        x = self.flatten(x)  # (B, T·E)
        return self.head(x)  # (B,)
