"""Row reductions and zeros from Triton builtins only, so kernels run under the interpreter whatever
imported triton first.

`tl.zeros`, `tl.max` and `tl.sum` are themselves `@triton.jit` functions in triton.language. Triton
makes a jit function interpreted or compiled when it is defined, so if triton was imported before
TRITON_INTERPRET=1 was set (bitsandbytes, peft and torch._dynamo all import it), those three stay
compiled and cannot be called from an interpreted kernel ("Cannot call @triton.jit'd outside of the
scope of a kernel"). The builtins (`tl.full`, `tl.reduce`, `tl.maximum`) have no such state; on a
GPU these compile to the same reductions as `tl.max` / `tl.sum`.
"""

import triton
import triton.language as tl


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


@triton.jit
def row_sum(x, axis: tl.constexpr):
    return tl.reduce(x, axis, _add)


@triton.jit
def row_max(x, axis: tl.constexpr):
    return tl.reduce(x, axis, _maximum)
