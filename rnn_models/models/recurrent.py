"""The three recurrent classifiers: lstm, bilstm and handrolled_bilstm.

Each one embeds the ids, runs LSTMs, reads one feature vector per review (`features`) and ends with
the MLP's dense head. The correct form reads each review at its own last real token, so appending
padding never changes a logit. `seed_faithful=True` reproduces the notebook's readout instead (last
padded step, padding fed through the LSTMs), so a report can measure what that choice costs.

Padding (id 0) is always at the end of a row; `lengths` counts the real tokens before it.

Every LSTM runs in float32, inside an autocast region too (`LSTM`; the whole policy in
training/precision.py). The BiLSTMs read their reviews in one of two equal forms, chosen per device:
packed sequences on CUDA (cuDNN's variable-length path: no doubled batch, no `nonzero`, one small copy of
the lengths to the host), unpacked reads on the CPU, where packing costs per time step (measured 2.5-7x slower).
"""

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from rnn_models.models.mlp import DenseHead


# ----------------------------------------------------------------------------- shared helpers

def clamp_lengths(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Check the shared signature's shapes; return lengths on ids' device, clamped into [0, T]."""
    if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
        raise ValueError(f"expected ids (B, T) and lengths (B,), got {tuple(ids.shape)} and {tuple(lengths.shape)}")
    return lengths.to(device=ids.device, dtype=torch.long).clamp(0, ids.shape[1])


class LSTM(nn.LSTM):
    """nn.LSTM that runs in its parameters' dtype (float32) even inside an autocast region.

    CUDA autocast runs cuDNN LSTMs in float16 whatever dtype it was asked for (the `_cudnn_rnn` wrapper in
    aten/src/ATen/cudnn/AutocastRNN.cpp casts inputs, states and weights to half), which would need a
    GradScaler; CPU autocast runs oneDNN LSTMs in its lower dtype. Same parameters, same state_dict keys.
    """

    def forward(self, input, hx=None):
        device = (input.data if isinstance(input, PackedSequence) else input).device.type
        if not torch.is_autocast_enabled(device):
            return super().forward(input, hx)
        with torch.autocast(device, enabled=False):
            return super().forward(input.to(self.weight_ih_l0.dtype), hx)


def make_lstm(input_size: int, hidden_size: int, num_layers: int, dropout: float, **kwargs) -> LSTM:
    # nn.LSTM's dropout acts only between layers (and warns if set with one layer)
    return LSTM(input_size, hidden_size, num_layers, batch_first=True,
                dropout=dropout if num_layers > 1 else 0.0, **kwargs)


def use_packing(x: torch.Tensor, pack: bool | None) -> bool:
    """`pack` if set (tests force each form), else on CUDA: packed sequences there, unpacked reads on the CPU."""
    return x.is_cuda if pack is None else pack


def packed_final_states(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run `lstm` over each review's real tokens only; return h_n (L·D, B, H) in batch order."""
    # packing needs every length ≥ 1, on the CPU (lengths on CUDA cost one host sync); callers zero the empty
    # reviews afterwards
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = lstm(packed)  # enforce_sorted=False already restores the batch order of h_n
    return h_n


def zero_empty(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """An empty review has seen no token: give it the LSTM's zero initial state, whatever was packed."""
    return features.masked_fill((lengths == 0).unsqueeze(-1), 0)  # (B, F)


def take_step(seq: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """seq (B, T, F), steps (B,) → seq[b, steps[b]] as (B, F)."""
    index = steps.view(-1, 1, 1).expand(-1, 1, seq.shape[-1])  # (B, 1, F)
    return seq.gather(1, index).squeeze(1)  # (B, F)


def reverse_within_length(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first `length` steps, padding staying at the end; its own inverse."""
    t = torch.arange(seq.shape[1], device=seq.device).unsqueeze(0)  # (1, T)
    n = lengths.unsqueeze(1)  # (B, 1)
    src = torch.where(t < n, n - 1 - t, t)  # (B, T)
    return seq.gather(1, src.unsqueeze(-1).expand(-1, -1, seq.shape[-1]))  # (B, T, F)


def align_right(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Move each row's first `length` steps to the end (padding first): row b ends at t = T-1."""
    T = seq.shape[1]
    t = torch.arange(T, device=seq.device).unsqueeze(0)  # (1, T)
    src = (t - (T - lengths).unsqueeze(1)) % T  # (B, T): real tokens land at T-len..T-1, padding before them
    return seq.gather(1, src.unsqueeze(-1).expand(-1, -1, seq.shape[-1]))  # (B, T, F)


def merge_directions(a: torch.Tensor, b: torch.Tensor, how: str) -> torch.Tensor:
    return a + b if how == "sum" else torch.cat([a, b], dim=-1)


# ----------------------------------------------------------------------------- models

class LSTMClassifier(nn.Module):
    """Embedding → nn.LSTM → state at the last real token → Linear(H, H) ReLU → Linear(H, 1)."""

    def __init__(self, vocab_size: int, embedding_size: int = 64, hidden_size: int = 64, num_layers: int = 1,
                 dropout: float = 0.0, seed_faithful: bool = False):
        super().__init__()
        self.seed_faithful = seed_faithful
        self.embedding = nn.Embedding(vocab_size + 2, embedding_size)  # 0 = padding, 1 = out-of-vocabulary
        self.embedding_dropout = nn.Dropout(dropout)
        self.lstm = make_lstm(embedding_size, hidden_size, num_layers, dropout)
        self.head = DenseHead(hidden_size, hidden_size, dropout)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = clamp_lengths(ids, lengths)
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        out, _ = self.lstm(x)  # (B, T, H), padding run through the LSTM too
        if self.seed_faithful:
            return out[:, -1]  # (B, H) the notebook reads t = T-1 whatever the review's length
        # A causal LSTM's output at t < len depends on real tokens only: reading it there is exactly the
        # packed result, and 1.3-2.3x faster on the CPU than packing.
        return zero_empty(take_step(out, (lengths - 1).clamp(min=0)), lengths)  # (B, H) last real token

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, lengths))  # (B,)


class BiLSTMClassifier(nn.Module):
    """Embedding → nn.LSTM(bidirectional) → [final fwd, final bwd] (2H) → Linear(2H, H) ReLU → Linear(H, 1).

    `seed_faithful` has no effect: the notebook's `Axon.bidirectional` version never compiled, so
    there is no notebook readout to reproduce.
    """

    pack: bool | None = None  # None: packed sequences on CUDA, the right-aligned second read elsewhere

    def __init__(self, vocab_size: int, embedding_size: int = 64, hidden_size: int = 64, num_layers: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size + 2, embedding_size)
        self.embedding_dropout = nn.Dropout(dropout)
        self.lstm = make_lstm(embedding_size, hidden_size, num_layers, dropout, bidirectional=True)
        self.head = DenseHead(2 * hidden_size, hidden_size, dropout)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = clamp_lengths(ids, lengths)
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        # With num_layers > 1 the upper layers mix both directions: only packing keeps padding out of them.
        if self.lstm.num_layers > 1 or use_packing(x, self.pack):
            h_n = packed_final_states(self.lstm, x, lengths)  # (2L, B, H), layer-major, forward first
            return zero_empty(torch.cat([h_n[-2], h_n[-1]], dim=-1), lengths)  # (B, 2H)
        # The fused module reads each row both ways, so padding at the end would reach the backward direction
        # first. Rows with padding are read a second time, shifted to end at T-1, where the backward direction
        # is read at the first real token. Exactly the packed result, and faster on the CPU, where packing
        # costs per time step (2-3x at T = 64, where most IMDB reviews fill every step and need no second read).
        B, T, H = x.shape[0], x.shape[1], self.lstm.hidden_size
        padded = (lengths < T).nonzero().squeeze(1)  # (P,) rows the backward direction must not start on padding
        out, _ = self.lstm(torch.cat([x, align_right(x[padded], lengths[padded])]))  # (B + P, T, 2H)
        forward = take_step(out[:B, :, :H], (lengths - 1).clamp(min=0))  # (B, H) after the last real token
        first = take_step(out[B:, :, H:], (T - lengths[padded]).clamp(max=T - 1))  # (P, H) shifted rows
        backward = out[:B, 0, H:].index_copy(0, padded, first)  # (B, H) after the first real token, back to front
        return zero_empty(torch.cat([forward, backward], dim=-1), lengths)  # (B, 2H)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, lengths))  # (B,)


class HandrolledBiLSTM(nn.Module):
    """Two unidirectional nn.LSTMs, one fed each review reversed, merged by 'sum' (notebook) or 'concat'.

    Correct form: the backward LSTM reads each review reversed within its true length, so it starts
    at the last real token and padding stays at the end, unseen by the readout; the features are
    merge(forward output at t = len-1, backward output at t = 0). With num_layers > 1 each direction
    stacks on its own (unlike nn.LSTM(bidirectional), whose upper layers see both directions).

    `seed_faithful=True` is the notebook: the whole padded row reversed, outputs reversed back,
    merged and read at t = T-1, where the backward LSTM has seen nothing but padding.
    """

    pack: bool | None = None  # None: packed sequences on CUDA, unpacked reads elsewhere (the correct form)

    def __init__(self, vocab_size: int, embedding_size: int = 64, hidden_size: int = 64, num_layers: int = 1,
                 dropout: float = 0.0, merge: str = "sum", seed_faithful: bool = False):
        super().__init__()
        self.merge, self.seed_faithful = merge, seed_faithful
        self.embedding = nn.Embedding(vocab_size + 2, embedding_size)
        self.embedding_dropout = nn.Dropout(dropout)
        self.forward_lstm = make_lstm(embedding_size, hidden_size, num_layers, dropout)
        self.backward_lstm = make_lstm(embedding_size, hidden_size, num_layers, dropout)
        merged = hidden_size if merge == "sum" else 2 * hidden_size
        self.head = DenseHead(merged, hidden_size, dropout)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = clamp_lengths(ids, lengths)
        x = self.embedding_dropout(self.embedding(ids))  # (B, T, E)
        if self.seed_faithful:
            fwd, _ = self.forward_lstm(x)  # (B, T, H)
            bwd, _ = self.backward_lstm(x.flip(1))  # (B, T, H), padding first
            return merge_directions(fwd, bwd.flip(1), self.merge)[:, -1]  # (B, H or 2H) at t = T-1
        backwards = reverse_within_length(x, lengths)  # (B, T, E) each review back to front, padding at the end
        if use_packing(x, self.pack):  # each LSTM's final state is its state after the row's last real step
            on_host = lengths.cpu()  # one host copy for both packs
            last = packed_final_states(self.forward_lstm, x, on_host)[-1]  # (B, H) top layer, last real token
            first = packed_final_states(self.backward_lstm, backwards, on_host)[-1]  # (B, H) after the first
            return zero_empty(merge_directions(last, first, self.merge), lengths)  # (B, H or 2H)
        # outputs at t < len depend only on real tokens, so no packing is needed for invariance
        fwd, _ = self.forward_lstm(x)  # (B, T, H)
        bwd, _ = self.backward_lstm(backwards)  # (B, T, H) in reversed order
        bwd = reverse_within_length(bwd, lengths)  # (B, T, H) back in reading order
        last = take_step(fwd, (lengths - 1).clamp(min=0))  # (B, H) forward at the last real token
        first = bwd[:, 0]  # (B, H) backward after reading the whole review, back to front
        return zero_empty(merge_directions(last, first, self.merge), lengths)  # (B, H or 2H)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, lengths))  # (B,)
