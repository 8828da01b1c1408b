"""The epoch loop, the optimiser and schedule, and checkpoints: plain PyTorch, no Ray."""

import json
import time

import pytest
import torch

from rnn_models.config import ModelConfig, TrainConfig
from rnn_models.errors import UserError
from rnn_models.models import model_from_config
from rnn_models.training.adversarial import _direction, backward_with_adversary
from rnn_models.training.checkpoint import (
    checkpoint_meta,
    load_checkpoint,
    require_compatible,
    save_checkpoint,
)
from rnn_models.training.loop import LOSS, evaluate, make_optimizer, make_scheduler, train_epoch
from rnn_models.training.table_rows import add_up_rows, leave_tables_to_rows

CPU = torch.device("cpu")
DATA = {"vocab_size": 20, "max_len": 8, "vocab_sha256": "abc", "fingerprint": "f", "strip_br": False}


def _batches(n_batches=4, batch_size=16, seed=0):
    """A learnable toy task: label 1 iff token 5 occurs among the real tokens."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        lengths = torch.randint(1, 9, (batch_size,), generator=g)
        ids = torch.randint(2, 22, (batch_size, 8), generator=g)
        ids[torch.arange(8) >= lengths.unsqueeze(1)] = 0
        labels = (ids == 5).any(1).float()
        batches.append({"ids": ids, "length": lengths, "label": labels})
    return batches


def test_training_lowers_the_loss_and_counts_every_review():
    model = model_from_config(ModelConfig(arch="lstm", hidden_size=16, embedding_size=8), 20, 8, seed=0)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    batches = _batches()
    before = evaluate(model, batches, CPU)
    for _ in range(30):
        train = train_epoch(model, batches, optimizer, CPU)
    after = evaluate(model, batches, CPU)
    assert train.count == after.count == before.count == 64
    assert after.mean_loss < 0.5 * before.mean_loss and after.accuracy > 0.9


# The mean loss of each architecture's first two steps from seed 0 (torch 2.13 CPU, this file's `_batches`):
# a change to initialisation, a model's forward pass, the loss or the optimizer moves them.
STORED_LOSSES = {
    "mlp": (0.7194066, 0.5996062),
    "lstm": (0.7608274, 0.7428085),
    "bilstm": (0.6666426, 0.6466928),
    "handrolled_bilstm": (0.7331922, 0.7072653),
}


@pytest.mark.parametrize("arch", list(STORED_LOSSES))
def test_the_first_two_steps_reproduce_the_stored_losses(arch):
    model = model_from_config(ModelConfig(arch=arch, hidden_size=16, embedding_size=8), 20, 8, seed=0)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    batch = _batches(n_batches=1)
    losses = [train_epoch(model, batch, optimizer, CPU).mean_loss for _ in range(2)]  # one step per epoch
    assert losses == pytest.approx(STORED_LOSSES[arch], rel=1e-5)


def test_sparse_table_gradients_become_the_dense_ones():
    """On one process, `add_up_rows` turns the tables' sparse gradients into the dense ones (up to the order of
    float additions: a bigram row read twice in a review adds its two gradients in another order)."""
    ids = torch.randint(2, 50, (4, 6), generator=torch.Generator().manual_seed(0))
    grads = {}
    for sparse in (False, True):
        model = model_from_config(ModelConfig(arch="lstm", hidden_size=8, bigram_buckets=32), 48, 6, seed=0)
        if sparse:
            leave_tables_to_rows(model)
        model(ids, torch.full((4,), 6)).sum().backward()
        assert model.inputs.bigram_embedding.weight.grad.is_sparse == sparse
        assert add_up_rows(model) == 0  # nothing sent: one process
        grads[sparse] = [p.grad for p in model.parameters()]
    assert all(
        not g.is_sparse and torch.allclose(g, d, rtol=0, atol=1e-8) for g, d in zip(grads[True], grads[False])
    )


def test_grad_clip_bounds_the_update():
    batches = _batches(n_batches=1)
    deltas = []
    for clip in (0.0, 1e-3):
        model = model_from_config(ModelConfig(arch="mlp"), 20, 8, seed=0)
        start = [p.detach().clone() for p in model.parameters()]
        train_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=1.0), CPU, grad_clip=clip)
        deltas.append(sum((p.detach() - s).norm() ** 2 for p, s in zip(model.parameters(), start)) ** 0.5)
    assert deltas[1] == pytest.approx(1e-3, rel=1e-3) and deltas[0] > 10 * deltas[1]


@pytest.mark.parametrize(
    "model_cfg",
    [
        ModelConfig(arch="lstm", hidden_size=16, embedding_size=8, bigram_buckets=64),
        ModelConfig(arch="handrolled_bilstm", hidden_size=16, embedding_size=8),
        ModelConfig(arch="mlp", pooling="mean", bigram_buckets=64),
    ],
)
def test_adversarial_pass_raises_the_loss_and_adds_its_gradient(model_cfg):
    batch = _batches(n_batches=1)[0]
    model = model_from_config(model_cfg, 20, 8, seed=0).eval()  # no dropout: both passes see the same network

    def run(eps):
        model.zero_grad()
        losses = []

        def forward():
            logits = model(batch["ids"], batch["length"])
            losses.append(LOSS(logits, batch["label"]))
            return logits, losses[-1]

        backward_with_adversary(model, forward, eps, batch["length"])
        return losses, [p.grad.clone() for p in model.parameters()]

    (clean, same), grads = run(0.0)
    assert torch.equal(clean, same)
    model.zero_grad()
    LOSS(model(batch["ids"], batch["length"]), batch["label"]).div(16).backward()
    assert all(
        torch.allclose(g, 2 * p.grad) for g, p in zip(grads, model.parameters())
    )  # eps 0: the loss twice
    (clean, pushed), _ = run(0.05)
    assert pushed > clean  # the push goes up the loss
    assert not any(m._forward_hooks for m in model.modules())  # the hooks are gone after the step


def test_adversarial_step_is_eps_times_each_reviews_norm_over_its_real_steps():
    x = torch.randn(3, 5, 4, requires_grad=True)
    (x * torch.randn(3, 5, 4)).sum().backward()
    step = _direction(x, torch.tensor([5, 2, 0]))  # a full review, one of two tokens, an empty one
    real = [x.detach()[0].norm(), x.detach()[1, :2].norm(), 0.0]  # padding rows left out of the norm
    assert torch.allclose(step.flatten(1).norm(dim=1), torch.tensor(real))
    cosine = torch.nn.functional.cosine_similarity(step[:2].flatten(1), x.grad[:2].flatten(1))
    assert torch.allclose(cosine, torch.ones(2))  # along the gradient


def test_the_adversarial_pass_draws_the_clean_passs_dropout_masks():
    """With word, embedding and head dropout on, eps 0 makes the second pass the first again: the same loss,
    and twice the gradient of one pass from the same random state."""
    cfg = ModelConfig(arch="lstm", hidden_size=16, embedding_size=8, dropout=0.5, token_dropout=0.3)
    model = model_from_config(cfg, 20, 8, seed=0).train()
    batch = _batches(n_batches=1)[0]
    losses = []

    def forward():
        logits = model(batch["ids"], batch["length"])
        losses.append(LOSS(logits, batch["label"]))
        return logits, losses[-1]

    torch.manual_seed(3)
    backward_with_adversary(model, forward, 0.0, batch["length"])
    twice = [p.grad.clone() for p in model.parameters()]
    assert torch.equal(losses[0], losses[1])
    model.zero_grad()
    torch.manual_seed(3)
    forward()[1].div(16).backward()
    assert all(torch.allclose(g, 2 * p.grad) for g, p in zip(twice, model.parameters()))


def test_optimizer_and_cosine_schedule():
    model = model_from_config(ModelConfig(arch="mlp"), 20, 8)
    assert type(make_optimizer(model, TrainConfig())) is torch.optim.Adam
    assert type(make_optimizer(model, TrainConfig(weight_decay=0.01))) is torch.optim.AdamW
    optimizer = make_optimizer(model, TrainConfig(lr=1.0))
    assert make_scheduler(optimizer, TrainConfig(), 10) is None
    scheduler = make_scheduler(
        optimizer, TrainConfig(lr=1.0, lr_schedule="cosine", epochs=3), steps_per_epoch=10
    )
    rates = []
    for _ in range(30):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.1, rel=0.01)  # warming up over the first epoch
    assert max(rates) == rates[9] and rates[29] < 0.01  # peak after warm-up, ~0 at the end


def _saved(tmp_path, model_cfg=ModelConfig(arch="lstm")):
    model = model_from_config(model_cfg, 20, 8, seed=1)
    optimizer = make_optimizer(model, TrainConfig())
    train_epoch(model, _batches(n_batches=1), optimizer, CPU)
    meta = checkpoint_meta(3, model_cfg, TrainConfig(), DATA, history=[{"epoch": 3}])
    save_checkpoint(tmp_path, model=model, optimizer=optimizer, scheduler=None, meta=meta, vocab=["a", "b"])
    return model


def test_checkpoint_round_trip(tmp_path):
    model = _saved(tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.meta["epoch"] == 3 and loaded.vocab == ["a", "b"] and loaded.model_config.arch == "lstm"
    restored = loaded.model
    for a, b in zip(model.state_dict().values(), restored.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.state["optimizer"]["state"]  # Adam's moments came back too


@pytest.mark.parametrize("arch", ["lstm", "handrolled_bilstm"])
def test_a_checkpoint_saved_before_the_token_inputs_module_still_loads(tmp_path, arch):
    """Recurrent models kept their token tables at the top (`embedding.weight`) until they moved into
    `inputs`: such a checkpoint loads with the same tensors, the tested weights too."""
    model = _saved(tmp_path, ModelConfig(arch=arch, bigram_buckets=16))
    old_names = {k.removeprefix("inputs."): v for k, v in model.state_dict().items()}
    assert "embedding.weight" in old_names and "bigram_embedding.weight" in old_names
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**state, "model": old_names, "tested": old_names}, tmp_path / "model.pt")
    loaded = load_checkpoint(tmp_path)
    assert loaded.state["tested"].keys() == model.state_dict().keys()
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_keeps_an_earlier_epochs_weights_for_the_test(tmp_path):
    model = model_from_config(ModelConfig(arch="lstm"), 20, 8, seed=1)
    earlier = {
        k: v.clone()
        for k, v in model_from_config(ModelConfig(arch="lstm"), 20, 8, seed=2).state_dict().items()
    }
    meta = checkpoint_meta(
        2, ModelConfig(arch="lstm"), TrainConfig(), DATA, history=[{"epoch": 1}, {"epoch": 2}]
    )
    save_checkpoint(
        tmp_path,
        model=model,
        optimizer=make_optimizer(model, TrainConfig()),
        scheduler=None,
        meta=meta,
        vocab=["a"],
        tested=earlier,
    )
    loaded = load_checkpoint(tmp_path)  # tensors only, still
    assert all(torch.equal(loaded.state["tested"][k], v) for k, v in earlier.items())
    assert all(torch.equal(loaded.state["model"][k], v) for k, v in model.state_dict().items())


def test_each_epoch_notes_how_long_its_first_batch_took_to_come():
    """A streamed epoch's start-up (reads, the shuffle buffer) before its first step, apart from its steps."""
    from rnn_models.training import loop

    def slow_to_start(epoch):
        time.sleep(0.3)
        yield from _batches(seed=epoch)

    model = model_from_config(ModelConfig(arch="mlp"), 20, 8, seed=0)
    cfg = TrainConfig(lr=1e-2, epochs=2)
    history, _ = loop.fit(model, make_optimizer(model, cfg), None, cfg, slow_to_start, lambda: [], CPU)
    assert all(0.3 <= h["first_batch_seconds"] < h["epoch_seconds"] for h in history)


def test_fit_keeps_the_tested_epochs_weights_and_stops_early(monkeypatch):
    """Val accuracy 0.6, 0.8, 0.7, 0.75 with patience 2: four epochs, epoch 2's weights kept (and handed to
    `after_epoch` as the earlier epoch's from epoch 3 on), the fifth never trained."""
    from rnn_models.training import loop

    scores = iter([0.6, 0.8, 0.7, 0.75, 0.9])
    monkeypatch.setattr(
        loop, "evaluate", lambda model, batches, device: loop.Sums(1.0, next(scores) * 100, 100)
    )
    model = model_from_config(ModelConfig(arch="mlp"), 20, 8, seed=0)
    cfg = TrainConfig(lr=1e-2, epochs=5, patience=2)
    optimizer, seen = make_optimizer(model, cfg), []

    def after_epoch(history, earlier):
        seen.append((history[-1]["epoch"], earlier, {k: v.clone() for k, v in model.state_dict().items()}))

    history, tested = loop.fit(
        model,
        optimizer,
        None,
        cfg,
        lambda epoch: _batches(seed=epoch),
        lambda: [],
        CPU,
        after_epoch=after_epoch,
    )
    assert [h["epoch"] for h in history] == [1, 2, 3, 4] and [h["val_accuracy"] for h in history][1] == 0.8
    epoch_2 = seen[1][2]
    assert all(torch.equal(tested[k], epoch_2[k]) for k in epoch_2)
    assert seen[0][1] is None and seen[1][1] is None and seen[2][1] is tested and seen[3][1] is tested
    assert not torch.equal(seen[3][2]["embedding.weight"], epoch_2["embedding.weight"])  # training went on


def test_each_epochs_draws_are_seeded_by_the_seed_the_epoch_and_the_rank():
    """Dropout masks (and Axon's initial states) repeat for the same seed, epoch and rank, whatever the process
    drew before; another seed or rank draws others."""
    from rnn_models.training import loop

    def trained(seed: int, rank: int = 0) -> torch.Tensor:
        model_cfg = ModelConfig(
            arch="lstm", hidden_size=16, embedding_size=8, dropout=0.5, initial_state="axon"
        )
        model = model_from_config(model_cfg, 20, 8, seed=0)  # the same initial weights every time
        cfg = TrainConfig(lr=1e-2, epochs=2, seed=seed)
        torch.rand(seed + rank + 1)  # whatever the process drew before
        loop.fit(
            model,
            make_optimizer(model, cfg),
            None,
            cfg,
            lambda e: _batches(seed=e),
            lambda: [],
            CPU,
            rank=rank,
        )
        return model.head.out.weight.detach().clone()

    first = trained(seed=1)
    assert torch.equal(first, trained(seed=1))
    assert not torch.equal(first, trained(seed=2)) and not torch.equal(first, trained(seed=1, rank=1))


def test_the_tested_epoch_is_the_first_best_or_the_last():
    from rnn_models.training.loop import (
        tested_epoch,
    )  # imported here: pytest would collect a module-level test*

    history = [
        {"epoch": 1, "val_accuracy": 0.7},
        {"epoch": 2, "val_accuracy": 0.8},
        {"epoch": 3, "val_accuracy": 0.8},
        {"epoch": 4, "val_accuracy": 0.6},
    ]
    assert tested_epoch(history, TrainConfig()) == 2  # the first of two equal best
    assert tested_epoch(history, TrainConfig(test_checkpoint="last")) == 4


def test_checkpoints_load_tensors_only(tmp_path):
    _saved(tmp_path)
    torch.save({"model": {}, "payload": print}, tmp_path / "model.pt")  # a pickled callable
    with pytest.raises(UserError, match="unreadable"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_for_another_vocabulary_or_model_is_refused(tmp_path):
    _saved(tmp_path)
    loaded = load_checkpoint(tmp_path)
    require_compatible(loaded, ModelConfig(arch="lstm"), DATA, "resume")  # the same: accepted
    with pytest.raises(UserError, match="data vocab_sha256: checkpoint 'abc', now 'xyz'"):
        require_compatible(loaded, ModelConfig(arch="lstm"), {**DATA, "vocab_sha256": "xyz"}, "resume")
    with pytest.raises(UserError, match="model hidden_size: checkpoint 64, now 32"):
        require_compatible(loaded, ModelConfig(arch="lstm", hidden_size=32), DATA, "resume")


def test_a_directory_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({}))
    with pytest.raises(UserError, match="missing model.pt, vocab.json"):
        load_checkpoint(tmp_path)
