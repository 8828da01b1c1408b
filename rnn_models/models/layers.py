"""Layers the architectures share: the recurrent models' token inputs (embeddings of tokens and hashed
bigrams, word and embedding dropout) and every model's dense ending."""

import torch
from torch import nn

from rnn_models.config import ModelConfig

OOV = 1  # the out-of-vocabulary id
LEAKY_SLOPE = 0.01  # PyTorch's default: small enough to read as ReLU, large enough to revive a unit


class TokenInputs(nn.Module):
    """ids (B, T) → a recurrent model's step inputs (B, T, E): each token's embedding (K + 2 rows: 0 = padding,
    1 = out-of-vocabulary), plus with `bigram_buckets` that of the hashed pair (previous token, this token) from
    the second step on; word dropout first, embedding dropout last. A pair at a real step holds real tokens
    only, so padding still never reaches a readout."""

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 2, cfg.embedding_size)
        self.bigram_embedding = (
            nn.Embedding(cfg.bigram_buckets, cfg.embedding_size) if cfg.bigram_buckets else None
        )
        self.token_dropout = cfg.token_dropout
        self.dropout = embedding_dropout(cfg.embedding_dropout, cfg.dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = drop_tokens(ids, self.token_dropout, self.training)
        x = self.embedding(ids)  # (B, T, E)
        if self.bigram_embedding is not None and ids.shape[1] > 1:
            pairs = self.bigram_embedding(
                bigram_ids(ids, self.bigram_embedding.num_embeddings)
            )  # (B, T-1, E)
            x = torch.cat([x[:, :1], x[:, 1:] + pairs], dim=1)
        return self.dropout(x)


def drop_tokens(ids: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """While training, each real token (id ≥ 2) becomes out-of-vocabulary with probability `p`; padding stays."""
    if not training or p == 0:
        return ids
    return ids.masked_fill((torch.rand(ids.shape, device=ids.device) < p) & (ids > OOV), OOV)


def embedding_dropout(kind: str, p: float) -> nn.Module:
    """Dropout on the embeddings (B, T, E): of single values, of whole channels across a review, or none."""
    if kind == "spatial":
        return SpatialDropout(p)
    return nn.Dropout(p if kind == "element" else 0.0)


class SpatialDropout(nn.Dropout1d):
    """Drops whole embedding channels for every step of a review (Keras' SpatialDropout1D) on (B, T, E)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DenseHead(nn.Module):
    """Features (B, F) → one logit per review (B,): Linear(F, H) ReLU [Dropout] Linear(H, 1).

    `--head-activation leaky_relu` lets a unit that is off on every review still learn: with ReLU, a head whose
    units all turn off early in training passes no gradient back and the model stays at chance (seen once, on
    frontier's hand-rolled BiLSTM)."""

    def __init__(self, in_features: int, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.relu = nn.LeakyReLU(LEAKY_SLOPE) if cfg.head_activation == "leaky_relu" else nn.ReLU()
        self.dropout = nn.Dropout(cfg.dropout)  # p=0 (the notebook) is the identity
        self.out = nn.Linear(cfg.hidden_size, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.relu(self.dense(features)))  # (B, H)
        return self.out(x).squeeze(-1)  # (B,)


BIGRAM_PRIME = 1_000_003  # mixes the first id into the bigram's hash; any large odd constant would do


def bigram_ids(ids: torch.Tensor, buckets: int) -> torch.Tensor:
    """Hashed bigram of each pair of neighbouring ids, in [0, buckets): (B, T-1), int64. Deterministic: the
    same pair gets the same row on every run and rank."""
    ids = ids.long()
    return (ids[:, :-1] * BIGRAM_PRIME + ids[:, 1:]) % buckets
