"""Where lab's Triton kernels run: compiled on a CUDA GPU, or under Triton's interpreter on the CPU.

Triton decides interpreted vs compiled when a kernel is *defined* (`@triton.jit` reads
TRITON_INTERPRET at import), so `labcli.kernels` sets TRITON_INTERPRET=1 before any kernel module
is imported on a machine without CUDA. The interpreter runs the same kernel source with numpy:
exact enough to test against PyTorch and bitsandbytes, far too slow to time. Its known limits,
checked on triton 3.9: bf16 tensors are stored as uint16 and `tl.dot` multiplies those raw bits
(wrong numbers), autotuning and `driver.active.get_active_torch_device()` need a GPU, and numpy
must be installed. Every launcher here therefore picks an explicit config when interpreting.
"""

from __future__ import annotations

import os


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def use_interpreter_without_gpu() -> None:
    """Set TRITON_INTERPRET=1 when there is no CUDA device and the user did not choose."""
    if "TRITON_INTERPRET" not in os.environ and not cuda_available():
        os.environ["TRITON_INTERPRET"] = "1"


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def status() -> dict:
    """What a report should say about how the kernels ran."""
    interp = interpreting()
    return {
        "triton": triton_version(),
        "mode": "interpreter (TRITON_INTERPRET=1, numpy on the CPU: correctness only, not speed)" if interp
        else "compiled (CUDA)",
        "interpreter": interp,
        "cuda": cuda_available(),
    }


def check_device(*tensors) -> None:
    """Refuse CPU tensors for a compiled kernel (the interpreter takes CPU tensors, and copies CUDA ones)."""
    from labcli.errors import UserError

    if interpreting():
        return
    for t in tensors:
        if t is not None and not t.is_cuda:
            raise UserError("a CPU tensor was passed to a compiled Triton kernel",
                            "move it to CUDA, or run with TRITON_INTERPRET=1 (slow, for checking only)")
