"""The notebook's benchmark (embed every position, flatten, one hidden dense layer, one logit), and a
fastText-style bag of words and bigrams."""

import torch
from torch import nn

from rnn_models.config import ModelConfig
from rnn_models.models.layers import DenseHead, bigram_ids


class MLP(nn.Module):
    """Embedding(K+2, E) → flatten (B, T·E) → Linear(T·E, H) ReLU → Linear(H, 1).

    `lengths` is accepted for the shared signature and ignored: the MLP sees padding as ordinary
    tokens (as in the notebook), and its first dense layer fixes T to `max_len`. `seed_faithful`
    has no effect here, there is no readout to choose.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        # K vocabulary tokens + id 0 (padding) + id 1 (out-of-vocabulary); no padding_idx, like Axon
        self.embedding = nn.Embedding(vocab_size + 2, cfg.embedding_size)
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.flatten = nn.Flatten()
        self.head = DenseHead(max_len * cfg.embedding_size, cfg)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2 or ids.shape[1] != self.max_len:
            raise ValueError(
                f"the mlp needs ids of shape (B, {self.max_len}) (max_len), got {tuple(ids.shape)}"
            )
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        x = self.flatten(x)  # (B, T·E)
        return self.head(x)  # (B,)


class BagOfNgrams(nn.Module):
    """fastText-style: Embedding of the tokens (and of hashed bigrams) → mean over the review → DenseHead.

    Still embedding → pool → dense, as the notebook's MLP, but the mean over each review's real tokens
    (and its bigrams, computed here from the ids) replaces the flatten: the model takes reviews of any
    length, blind to padding, and learns word pairs ("not good") that a bag of words cannot tell apart.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 2, cfg.embedding_size)
        self.bigram_buckets = cfg.bigram_buckets
        self.bigram_embedding = (
            nn.Embedding(cfg.bigram_buckets, cfg.embedding_size) if cfg.bigram_buckets else None
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = DenseHead(cfg.embedding_size, cfg)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(device=ids.device, dtype=torch.long).clamp(0, ids.shape[1])
        steps = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)  # (1, T)
        real = (steps < lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
        total = self.embedding(ids).masked_fill(~real, 0).sum(1)  # (B, E)
        count = lengths
        if self.bigram_embedding is not None and ids.shape[1] > 1:
            pairs = self.bigram_embedding(bigram_ids(ids, self.bigram_buckets))  # (B, T-1, E)
            total = total + pairs.masked_fill(~real[:, 1:], 0).sum(1)  # a pair is real where its second id is
            count = count + (lengths - 1).clamp(min=0)
        return total / count.clamp(min=1).unsqueeze(1).to(total.dtype)  # (B, E); zeros for an empty review

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(ids, lengths)))  # (B,)
