"""What runs in which dtype: one precision policy per device, for training, validation and test scoring.

| device                            | nn.Linear (the MLP's, every head's) | embeddings, LSTMs, loss, metrics |
|-----------------------------------|-------------------------------------|----------------------------------|
| CPU                               | float32                             | float32                          |
| CUDA with native bf16 (Ampere on) | bfloat16, under autocast            | float32, the LSTMs on TF32 cores |
| CUDA without (Volta, Turing)      | float32                             | float32                          |

The LSTMs stay out of autocast (`models.recurrent.LSTM`): CUDA autocast would run cuDNN LSTMs in float16
whatever dtype it was asked for, with the gradient-underflow risk that needs a GradScaler. Nothing runs in
float16, so no GradScaler is needed. Embeddings are not autocast ops and stay float32; the loss is taken
on float32 logits.
"""

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    device_type: str  # "cpu" or "cuda": where the autocast region applies
    dense: torch.dtype  # what nn.Linear computes in (autocast's dtype); float32 means no autocast
    lstm: torch.dtype = torch.float32  # what the LSTMs compute in, in and out of the region
    tf32: bool = False  # float32 matmuls of cuBLAS and cuDNN's LSTMs may use TF32 tensor cores

    def autocast(self):
        """The region a forward pass runs in (a no-op when everything is float32)."""
        if self.dense == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dense)

    def describe(self) -> str:
        name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
        lstm = name[self.lstm] + (" (TF32 tensor cores)" if self.tf32 else "")
        return (
            f"{self.device_type}: linear layers {name[self.dense]}, LSTMs {lstm}, embeddings and loss float32"
        )


def precision_for(device: torch.device | str) -> Precision:
    """The policy for `device`. On CUDA it also allows TF32 for this process's float32 matmuls."""
    device = torch.device(device)
    if device.type != "cuda":
        return Precision(device.type, torch.float32)
    _allow_tf32()
    native_bf16 = torch.cuda.get_device_capability(device)[0] >= 8  # Ampere on; Volta, Turing only emulate it
    return Precision("cuda", torch.bfloat16 if native_bf16 else torch.float32, tf32=native_bf16)


def _allow_tf32() -> None:
    """TF32 on Ampere and later: float32 storage and accumulation, products with a 10-bit mantissa. cuDNN
    (the LSTMs) allows it by default and cuBLAS does not; both are set here so that the policy holds."""
    if hasattr(torch.backends, "fp32_precision"):  # torch >= 2.9's settings; allow_tf32 is the older spelling
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.rnn.fp32_precision = "tf32"
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
