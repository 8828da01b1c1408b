"""The precision policy: which dtype every module computes in, per device.

On the CPU the policy is float32 throughout. The GPU policy (bf16 linear layers, float32 LSTMs) is checked
here with CPU autocast, which would run the LSTMs in bf16 as CUDA autocast would run them in fp16; on
CUDA, when present, it is checked as it runs, with a two-step training run.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from conftest import build_model
from rnn_models.config import ARCHS
from rnn_models.training.loop import train_epoch
from rnn_models.training.precision import Precision, precision_for

K, T = 20, 12
SMALL = dict(embedding_size=8, hidden_size=16)
FORMS = [(arch, None) for arch in ARCHS] + [("bilstm", True), ("handrolled_bilstm", True)]  # + packed forms
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def case_id(case) -> str:
    arch, pack = case
    return arch + ("-packed" if pack else "")


def batch(device="cpu", seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 1, 5, 0, 7, T - 1, 3, 9])
    ids = torch.randint(1, K + 2, (len(lengths), T), generator=g)
    ids[torch.arange(T) >= lengths.unsqueeze(1)] = 0
    labels = torch.randint(0, 2, (len(lengths),), generator=g).float()
    return {"ids": ids.to(device), "length": lengths.to(device), "label": labels.to(device)}


def output_dtypes(
    model: nn.Module, precision: Precision, b: dict
) -> tuple[dict[str, torch.dtype], torch.dtype]:
    """The dtype each leaf module's output has in one forward pass under `precision`, and the logits'."""
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output  # an LSTM: (output, (h_n, c_n))
            seen[name] = (out.data if isinstance(out, PackedSequence) else out).dtype

        return hook

    leaves = [(name, m) for name, m in model.named_modules() if name and not list(m.children())]
    hooks = [m.register_forward_hook(record(name)) for name, m in leaves]
    try:
        with torch.no_grad(), precision.autocast():
            logits = model(b["ids"], b["length"])
    finally:
        for h in hooks:
            h.remove()
    return seen, logits.dtype


def build(arch: str, pack, device="cpu") -> nn.Module:
    model = build_model(arch, K, T, seed=0, **SMALL).to(device)
    if pack is not None:
        model.pack = pack
    return model


def kinds(model: nn.Module) -> dict[str, type]:
    return {name: type(m) for name, m in model.named_modules()}


def test_the_cpu_policy_is_float32_everywhere_without_autocast():
    precision = precision_for("cpu")
    assert precision == Precision("cpu", torch.float32) and not precision.tf32
    assert "linear layers float32, LSTMs float32" in precision.describe()
    for arch, pack in FORMS:
        dtypes, logits = output_dtypes(build(arch, pack), precision, batch())
        assert logits == torch.float32 and set(dtypes.values()) == {torch.float32}, (arch, dtypes)


@pytest.mark.parametrize("case", FORMS, ids=case_id)
def test_under_bf16_autocast_linear_layers_are_bf16_and_lstms_stay_float32(case):
    """The CUDA policy's split, emulated with CPU autocast (which runs a plain nn.LSTM in bf16)."""
    model = build(*case)
    dtypes, logits = output_dtypes(model, Precision("cpu", torch.bfloat16), batch())
    for name, kind in kinds(model).items():
        if issubclass(kind, nn.Linear):
            assert dtypes[name] == torch.bfloat16, name
        elif issubclass(kind, (nn.LSTM, nn.Embedding)):
            assert dtypes[name] == torch.float32, name
    assert logits == torch.bfloat16  # the loss takes them as float32 (loop.LOSS on logits.float())


def test_a_plain_lstm_would_run_in_bf16_under_cpu_autocast():
    """What the emulation relies on: without `models.recurrent.LSTM`, autocast would take the LSTM too."""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out, _ = nn.LSTM(8, 16, batch_first=True)(torch.randn(2, 3, 8))
    except RuntimeError as e:  # a CPU whose oneDNN has no bf16 LSTM (seen on an AMD EPYC): refused as bf16
        assert "LSTM forward propagation primitive" in str(e)
        return
    assert out.dtype == torch.bfloat16


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_training_step_under_bf16_autocast_keeps_float32_weights_and_gradients(arch):
    model = build(arch, None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    b = batch()
    with Precision("cpu", torch.bfloat16).autocast():
        loss = nn.functional.binary_cross_entropy_with_logits(
            model(b["ids"], b["length"]).float(), b["label"]
        )
    loss.backward()
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.parameters())
    optimizer.step()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


# ----------------------------------------------------------------------------- on a CUDA GPU, when present


@cuda
@pytest.mark.parametrize("case", FORMS, ids=case_id)
def test_on_cuda_the_lstms_run_in_float32_inside_the_autocast_region(case):
    precision = precision_for("cuda")
    native_bf16 = torch.cuda.get_device_capability()[0] >= 8
    assert (
        precision.dense == (torch.bfloat16 if native_bf16 else torch.float32)
        and precision.lstm == torch.float32
    )
    model = build(*case, device="cuda")
    dtypes, _ = output_dtypes(model, precision, batch("cuda"))
    for name, kind in kinds(model).items():
        if issubclass(kind, nn.Linear):
            assert dtypes[name] == precision.dense, name
        elif issubclass(kind, (nn.LSTM, nn.Embedding)):
            assert dtypes[name] == torch.float32, name  # cuDNN under autocast alone would give float16
    if native_bf16 and hasattr(torch.backends, "fp32_precision"):
        assert torch.backends.cudnn.rnn.fp32_precision == "tf32"


@cuda
def test_on_cuda_a_plain_lstm_under_autocast_runs_in_float16():
    """Why the LSTMs are kept out of autocast: cuDNN's wrapper casts to half whatever dtype was asked for."""
    lstm = nn.LSTM(8, 16, batch_first=True).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = lstm(torch.randn(2, 3, 8, device="cuda"))
    assert out.dtype == torch.float16


@cuda
@pytest.mark.parametrize("arch", list(ARCHS))
def test_two_training_steps_on_cuda(arch):
    model = build(arch, None, device="cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    sums = train_epoch(model, [batch("cuda", 1), batch("cuda", 2)], optimizer, torch.device("cuda"))
    assert sums.count == 16 and torch.isfinite(torch.as_tensor(sums.mean_loss))
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


@cuda
@pytest.mark.parametrize("arch", ["bilstm", "handrolled_bilstm"])
def test_on_cuda_the_packed_form_matches_the_unpacked_one(arch):
    model = build(arch, None, device="cuda").double().eval()  # float64: no TF32, exact comparison
    b = batch("cuda")
    with torch.no_grad():
        packed = model(b["ids"], b["length"])  # the default on CUDA
        model.pack = False
        unpacked = model(b["ids"], b["length"])
    assert (packed - unpacked).abs().max() <= 1e-10
