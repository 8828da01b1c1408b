"""DDP ranks add up the embedding tables' gradients as the rows a step touched, not as whole tables.

A `frontier` RNN's token and hashed-bigram tables hold 292,146 rows of 128; a step of 64 reviews touches about
14,000 of them. DDP would all-reduce both tables' gradients whole every step (143 MB per rank, nearly all
zeros). Instead DDP leaves the tables out; their backward makes sparse gradients (`nn.Embedding(sparse=True)`),
and after each step's backward every rank all-gathers the rows it touched with their gradients and adds them
into a dense gradient averaged over the ranks: the gradient DDP would have made, so clipping, weight decay and
AdamW see the same numbers (up to the order of float additions). All-gather, not a sparse all-reduce: NCCL has
none (pytorch/pytorch#22400), gloo's would do for CPUs only. Every rank adds the same parts in the same order,
so the ranks' weights stay identical, as DDP keeps them.
"""

import torch
import torch.distributed as dist
from torch import nn


def leave_tables_to_rows(model: nn.Module) -> None:
    """Call before DDP wraps `model`: its embedding tables make sparse gradients, and DDP leaves them out. (DDP
    then no longer copies them from rank 0 as it wraps: every rank builds them from the same seed, and a
    restored run loads the same checkpoint on every rank.)"""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Embedding):
            module.sparse = True
            names.append(f"{name}.weight")
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)


def add_up_rows(model: nn.Module) -> int:
    """Give every sparse table of `model` (after a backward) its dense gradient averaged over the ranks.
    Returns the bytes this rank sent (its rows' indices and values; 0 where there is nothing to add up).

    Every rank joins every table's gather, even one its batch did not touch (no gradient: no rows), or the
    ranks' collectives would pair up wrongly and hang; a table no rank touched keeps no gradient."""
    sent = 0
    for module in model.modules():
        if not (isinstance(module, nn.Embedding) and module.sparse):
            continue
        weight = module.weight
        if weight.grad is not None:
            grad = weight.grad.coalesce()
            rows, values = grad.indices()[0], grad.values()
        else:
            rows = torch.zeros(0, dtype=torch.int64, device=weight.device)
            values = weight.new_zeros((0, *weight.shape[1:]))
        parts, bytes_sent = _gathered(rows, values)
        sent += bytes_sent
        if all(len(rows) == 0 for rows, _ in parts):
            continue
        dense = torch.zeros_like(weight)
        for rows, values in parts:  # rank by rank, each part's rows distinct: the same sums on every rank
            dense.index_add_(0, rows, values)  # (CUDA adds repeated rows in no fixed order)
        weight.grad = dense / len(parts) if len(parts) > 1 else dense
    return sent


def _gathered(
    rows: torch.Tensor, values: torch.Tensor
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """Every rank's (rows, values), in rank order, and the bytes this rank sent. Ranks touch different numbers
    of rows: each pads its own to the largest count, and the padding is cut off after the gather."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return [(rows, values)], 0
    counts = [torch.zeros(1, dtype=torch.int64, device=rows.device) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([len(rows)], device=rows.device))
    counts = [int(c) for c in counts]
    most = max(counts)
    if most == 0:
        return [(rows, values)] * world, 8
    padded_rows = torch.zeros(most, dtype=rows.dtype, device=rows.device)
    padded_rows[: len(rows)] = rows
    padded_values = values.new_zeros((most, *values.shape[1:]))
    padded_values[: len(values)] = values
    all_rows = [torch.empty_like(padded_rows) for _ in counts]
    all_values = [torch.empty_like(padded_values) for _ in counts]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_values, padded_values)
    sent = (
        8 + padded_rows.numel() * padded_rows.element_size() + padded_values.numel() * values.element_size()
    )
    return [(r[:n], v[:n]) for r, v, n in zip(all_rows, all_values, counts)], sent
