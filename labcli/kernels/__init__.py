"""Hand-written Triton kernels: FlashAttention-2 (`flash_attention`) and bitsandbytes NF4 (`nf4`).

On a CUDA machine they compile; on a CPU-only machine they run under Triton's interpreter
(see `runtime`), which this package switches on before any kernel is defined.
"""

from labcli.kernels.runtime import use_interpreter_without_gpu

use_interpreter_without_gpu()
