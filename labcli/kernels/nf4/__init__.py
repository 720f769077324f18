"""bitsandbytes NF4 weights read by Triton kernels: dequantize, fused decode matmul, a Linear4bit route
(`linear4bit.use_lab_nf4`)."""

from labcli.kernels.nf4.triton import dequantize_nf4, nf4_linear, nf4_matmul

__all__ = ["dequantize_nf4", "nf4_linear", "nf4_matmul"]
