"""FlashAttention-2: a PyTorch reference (`reference`), the Triton kernels (`triton`), and the
transformers attention implementation built on them (`hf`)."""

from labcli.kernels.flash_attention.triton import (
    flash_attention,
    flash_attention_varlen,
)

__all__ = ["flash_attention", "flash_attention_varlen"]
