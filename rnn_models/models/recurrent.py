"""The three recurrent classifiers: lstm, bilstm and handrolled_bilstm.

Each one embeds the ids (`TokenInputs`, layers.py), runs LSTMs, reads one feature vector per review
(`features`) and ends with the shared dense head (layers.py). Three readouts, all blind to padding (appending padding never changes a logit):
`last`, the state after each review's last real token (each direction's, for the BiLSTMs), and `pool`,
the max and the mean of the outputs over every real step (each direction's outputs in review order), and
`pool_with_inputs`, which pools the step inputs (token and bigram embeddings) too, beside the outputs.
The notebook's masked `Axon.lstm` keeps its state over padding, so its readout is `last` too; only the
hand-rolled BiLSTM, whose LSTMs the notebook gives no mask, has a `seed_faithful` form (padding fed
through, the whole padded row reversed), so a report can measure what that choice costs.

Padding (id 0) is always at the end of a row; `lengths` counts the real tokens before it.

Every LSTM runs in float32, inside an autocast region too (`LSTM`; the whole policy in
training/precision.py). The BiLSTMs read their reviews in one of two equal forms, chosen per device:
packed sequences on CUDA (cuDNN's variable-length path: no doubled batch, no `nonzero`, one small copy of
the lengths to the host), unpacked reads on the CPU, where packing costs per time step (measured 2.5-7x slower).
"""

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnn_models.config import ModelConfig
from rnn_models.models.layers import DenseHead, TokenInputs

# ----------------------------------------------------------------------------- shared helpers


def clamp_lengths(ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Check the shared signature's shapes; return lengths on ids' device, clamped into [0, T]."""
    if ids.dim() != 2 or lengths.shape != ids.shape[:1]:
        raise ValueError(
            f"expected ids (B, T) and lengths (B,), got {tuple(ids.shape)} and {tuple(lengths.shape)}"
        )
    return lengths.to(device=ids.device, dtype=torch.long).clamp(0, ids.shape[1])


class LSTM(nn.LSTM):
    """nn.LSTM that runs in its parameters' dtype (float32) even inside an autocast region, and starts from
    zeros or, with `initial_state="axon"`, from Axon's initial state.

    CUDA autocast runs cuDNN LSTMs in float16 whatever dtype it was asked for (the `_cudnn_rnn` wrapper in
    aten/src/ATen/cudnn/AutocastRNN.cpp casts inputs, states and weights to half), which would need a
    GradScaler; CPU autocast runs oneDNN LSTMs in its lower dtype. Same parameters, same state_dict keys.

    Axon (lib/axon.ex `rnn_state`, v0.7) draws the state glorot-uniform over its (batch, units) shape, so
    within ±sqrt(6 / (B + H)), at every training step afresh; the cell and the output state come from one key,
    so they are equal. Scoring here starts from the draws' mean, zero, where Axon reuses one fixed draw per
    batch shape: a review's score then depends on its batch and its place in it, and here it never does.
    """

    def __init__(self, *args, initial_state: str = "zeros", **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_state = initial_state

    def forward(self, input, hx=None):
        device = (input.data if isinstance(input, PackedSequence) else input).device.type
        hx = self.initial(input) if hx is None else hx
        if not torch.is_autocast_enabled(device):
            return super().forward(input, hx)
        with torch.autocast(device, enabled=False):
            return super().forward(input.to(self.weight_ih_l0.dtype), hx)

    def initial(self, input) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The state (h0, c0), each (L·D, B, H), for a training batch (B, T, E) or a packed one; None for zeros
        (and for scoring)."""
        if self.initial_state == "zeros" or not self.training:
            return None
        packed = isinstance(input, PackedSequence)
        batch = int(input.batch_sizes[0]) if packed else input.shape[0]  # (packed: every length is ≥ 1)
        data = input.data if packed else input
        shape = (self.num_layers * (2 if self.bidirectional else 1), batch, self.hidden_size)
        limit = (6 / (batch + self.hidden_size)) ** 0.5
        state = (torch.rand(shape, device=data.device, dtype=self.weight_ih_l0.dtype) * 2 - 1) * limit
        return state, state


def make_lstm(
    input_size: int, hidden_size: int, num_layers: int, dropout: float, initial_state: str, **kwargs
) -> LSTM:
    # nn.LSTM's dropout acts only between layers (and warns if set with one layer)
    return LSTM(
        input_size,
        hidden_size,
        num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        initial_state=initial_state,
        **kwargs,
    )


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


def packed_outputs(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run `lstm` over each review's real tokens only; return its outputs (B, T, D·H), zero past each length."""
    packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def pool(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Max and mean of seq (B, T, F) over each row's first `length` steps: (B, 2F); zeros for an empty row."""
    real = (torch.arange(seq.shape[1], device=seq.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    top = seq.masked_fill(~real, float("-inf")).amax(1)  # (B, F)
    mean = seq.masked_fill(~real, 0).sum(1) / lengths.clamp(min=1).unsqueeze(1).to(seq.dtype)  # (B, F)
    return zero_empty(torch.cat([top, mean], dim=-1), lengths)  # (B, 2F)


POOLED = ("pool", "pool_with_inputs")  # the readouts that pool over every real step


def input_width(readout: str, embedding_size: int) -> int:
    """What the 'pool_with_inputs' readout adds to the features: the step inputs' max and mean (2E)."""
    return 2 * embedding_size if readout == "pool_with_inputs" else 0


def with_inputs(readout: str, features: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`features`, and with the 'pool_with_inputs' readout the max and mean of the step inputs x (B, T, E) beside
    them: a bag of the review's tokens (and bigrams) next to what the LSTMs read of it."""
    return torch.cat([features, pool(x, lengths)], dim=-1) if readout == "pool_with_inputs" else features


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


def one_way(lstm: nn.LSTM, template: nn.LSTM, x: torch.Tensor, suffix: str, start=None) -> torch.Tensor:
    """One direction of a one-layer bidirectional `lstm` as a unidirectional LSTM: `template` run with that
    direction's parameters (`suffix` "" or "_reverse"), which receive the gradients, from `start` (h0, c0) or
    zeros. (B, T, H)"""
    weights = {name: getattr(lstm, name + suffix) for name, _ in template.named_parameters()}
    out, _ = functional_call(template, weights, (x, start))
    return out


def direction(start: tuple[torch.Tensor, torch.Tensor] | None, d: int):
    """Direction d's part of a one-layer bidirectional LSTM's initial state (h0, c0); None (zeros) stays None."""
    return None if start is None else tuple(h[d : d + 1] for h in start)


def merge_directions(a: torch.Tensor, b: torch.Tensor, how: str) -> torch.Tensor:
    return a + b if how == "sum" else torch.cat([a, b], dim=-1)


# ----------------------------------------------------------------------------- models


class LSTMClassifier(nn.Module):
    """Embedding → nn.LSTM → readout (H, or 2H pooled) → Linear(·, H) ReLU → Linear(H, 1).

    The notebook's LSTM takes `mask: Axon.mask(sequence, 0)`, so it keeps its state over padding and its
    `seq[[.., -1, ..]]` is the state at the last real token: the `last` readout is the notebook's.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.readout = cfg.readout
        self.inputs = TokenInputs(cfg, vocab_size)
        self.lstm = make_lstm(
            cfg.embedding_size, cfg.hidden_size, cfg.num_layers, cfg.dropout, cfg.initial_state
        )
        self.head = DenseHead(
            cfg.hidden_size * (2 if cfg.readout in POOLED else 1)
            + input_width(cfg.readout, cfg.embedding_size),
            cfg,
        )

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = clamp_lengths(ids, lengths)
        x = self.inputs(ids)  # (B, T, E)
        # A causal LSTM's output at t < len depends on real tokens only: reading it there is exactly the
        # packed result, and 1.3-2.3x faster on the CPU than packing.
        out, _ = self.lstm(x)  # (B, T, H), padding run through the LSTM too, never read
        if self.readout in POOLED:
            return with_inputs(self.readout, pool(out, lengths), x, lengths)  # (B, 2H [+ 2E])
        return zero_empty(take_step(out, (lengths - 1).clamp(min=0)), lengths)  # (B, H) last real token

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, lengths))  # (B,)


class BiLSTMClassifier(nn.Module):
    """Embedding → nn.LSTM(bidirectional) → readout: [final fwd, final bwd] (2H), or both directions' outputs
    pooled (4H) → Linear(·, H) ReLU → Linear(H, 1).

    The notebook's `Axon.bidirectional` version never compiled, so there is no notebook form to reproduce:
    under the `seed` preset this is the project's fused BiLSTM with the notebook's recipe.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.readout = cfg.readout
        self.pack: bool | None = None  # the form of the reads: None picks by device; set to compare the two
        self.inputs = TokenInputs(cfg, vocab_size)
        self.lstm = make_lstm(
            cfg.embedding_size,
            cfg.hidden_size,
            cfg.num_layers,
            cfg.dropout,
            cfg.initial_state,
            bidirectional=True,
        )
        self.head = DenseHead(
            2 * cfg.hidden_size * (2 if cfg.readout in POOLED else 1)
            + input_width(cfg.readout, cfg.embedding_size),
            cfg,
        )
        # a one-layer, one-way LSTM of the same sizes, never trained: `one_way` runs it with each direction's
        # parameters (a tuple keeps it out of the module's parameters and state_dict)
        self._one_way = (make_lstm(cfg.embedding_size, cfg.hidden_size, 1, 0.0, "zeros"),)  # states passed in

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = clamp_lengths(ids, lengths)
        x = self.inputs(ids)  # (B, T, E)
        if self.readout in POOLED:
            return with_inputs(
                self.readout, pool(self._outputs(x, lengths), lengths), x, lengths
            )  # (B, 4H [+ 2E])
        # With num_layers > 1 the upper layers mix both directions: only packing keeps padding out of them.
        if self.lstm.num_layers > 1 or use_packing(x, self.pack):
            h_n = packed_final_states(self.lstm, x, lengths)  # (2L, B, H), layer-major, forward first
            return zero_empty(torch.cat([h_n[-2], h_n[-1]], dim=-1), lengths)  # (B, 2H)
        # The fused module reads each row both ways, so padding at the end would reach the backward direction
        # first. Rows with padding are read a second time, shifted to end at T-1, where the backward direction
        # is read at the first real token. Exactly the packed result, and faster on the CPU, where packing
        # costs per time step (2-3x at T = 64, where most IMDB reviews fill every step and need no second read).
        B, T, H = x.shape[0], x.shape[1], self.lstm.hidden_size
        padded = (
            (lengths < T).nonzero().squeeze(1)
        )  # (P,) rows the backward direction must not start on padding
        start = self.lstm.initial(x)
        if start is not None:  # each shifted row starts from its own row's state
            start = tuple(torch.cat([h, h[:, padded]], dim=1) for h in start)
        out, _ = self.lstm(torch.cat([x, align_right(x[padded], lengths[padded])]), start)  # (B + P, T, 2H)
        forward = take_step(out[:B, :, :H], (lengths - 1).clamp(min=0))  # (B, H) after the last real token
        first = take_step(out[B:, :, H:], (T - lengths[padded]).clamp(max=T - 1))  # (P, H) shifted rows
        backward = out[:B, 0, H:].index_copy(
            0, padded, first
        )  # (B, H) after the first real token, back to front
        return zero_empty(torch.cat([forward, backward], dim=-1), lengths)  # (B, 2H)

    def _outputs(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Both directions' outputs (B, T, 2H), right at every real step: packed, or on the CPU each direction
        run on its own, the backward one over each review reversed within its length (half the work of a
        second read of the padded rows, which with bucketed batches is nearly every row)."""
        if self.lstm.num_layers > 1 or use_packing(x, self.pack):
            return packed_outputs(self.lstm, x, lengths)
        template, start = self._one_way[0], self.lstm.initial(x)  # each direction starts as when packed
        forward = one_way(self.lstm, template, x, "", direction(start, 0))  # (B, T, H)
        backward = one_way(
            self.lstm, template, reverse_within_length(x, lengths), "_reverse", direction(start, 1)
        )
        return torch.cat([forward, reverse_within_length(backward, lengths)], dim=-1)  # (B, T, 2H)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, lengths))  # (B,)


class HandrolledBiLSTM(nn.Module):
    """Two unidirectional nn.LSTMs, one fed each review reversed, merged by 'sum' (notebook) or 'concat'.

    Correct form: the backward LSTM reads each review reversed within its true length, so it starts
    at the last real token and padding stays at the end, unseen by the readout; the features are
    merge(forward output at t = len-1, backward output at t = 0). With num_layers > 1 each direction
    stacks on its own (unlike nn.LSTM(bidirectional), whose upper layers see both directions).

    `readout="pool"` pools each direction's outputs over the real steps (max and mean), then merges them.

    `seed_faithful=True` is the notebook, whose two LSTMs get no mask: the whole padded row reversed, outputs
    reversed back, merged and read at t = T-1, where the backward LSTM has read one step only, the row's
    last (padding, unless the review fills all T steps); `readout` is then ignored.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, max_len: int):
        super().__init__()
        self.merge, self.seed_faithful = cfg.merge, cfg.seed_faithful
        self.readout = cfg.readout
        self.pack: bool | None = None  # the form of the reads: None picks by device; set to compare the two
        self.inputs = TokenInputs(cfg, vocab_size)
        sizes = (cfg.embedding_size, cfg.hidden_size, cfg.num_layers, cfg.dropout, cfg.initial_state)
        self.forward_lstm, self.backward_lstm = make_lstm(*sizes), make_lstm(*sizes)
        one_way = cfg.hidden_size * (2 if cfg.readout in POOLED and not cfg.seed_faithful else 1)
        extra = 0 if cfg.seed_faithful else input_width(cfg.readout, cfg.embedding_size)
        width = (one_way if cfg.merge == "sum" else 2 * one_way) + extra
        self.head = DenseHead(width, cfg)

    def features(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = clamp_lengths(ids, lengths)
        x = self.inputs(ids)  # (B, T, E)
        if self.seed_faithful:
            fwd, _ = self.forward_lstm(x)  # (B, T, H)
            bwd, _ = self.backward_lstm(x.flip(1))  # (B, T, H), padding first
            return merge_directions(fwd, bwd.flip(1), self.merge)[:, -1]  # (B, H or 2H) at t = T-1
        backwards = reverse_within_length(
            x, lengths
        )  # (B, T, E) each review back to front, padding at the end
        if self.readout in POOLED:  # each direction's outputs pooled in review order, then merged
            if use_packing(x, self.pack):
                fwd = packed_outputs(self.forward_lstm, x, lengths)  # (B, T, H)
                bwd = packed_outputs(self.backward_lstm, backwards, lengths)
            else:
                fwd, bwd = self.forward_lstm(x)[0], self.backward_lstm(backwards)[0]  # (B, T, H) each
            merged = merge_directions(pool(fwd, lengths), pool(bwd, lengths), self.merge)  # (B, 2H or 4H)
            return with_inputs(self.readout, merged, x, lengths)
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
