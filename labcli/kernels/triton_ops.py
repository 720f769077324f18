"""Row reductions from Triton builtins, so kernels run under the interpreter whatever imported triton
first, and run there at numpy speed.

`tl.zeros`, `tl.max` and `tl.sum` are themselves `@triton.jit` functions in triton.language. Triton
makes a jit function interpreted or compiled when it is defined, so if triton was imported before
TRITON_INTERPRET=1 was set (bitsandbytes, peft and torch._dynamo all import it), those stay compiled
and cannot be called from an interpreted kernel ("Cannot call @triton.jit'd outside of the scope of
a kernel"). So kernels use `tl.full` for zeros and call the builtin `tl.reduce` here with
triton.language's own combine functions: the interpreter recognises exactly those two objects and
reduces with numpy (any other combine function it applies element by element in Python, ~100x
slower), and the compiler builds the same reduction `tl.max` / `tl.sum` would.
"""

import triton
import triton.language as tl


@triton.jit
def row_sum(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._sum_combine)


@triton.jit
def row_max(x, axis: tl.constexpr):
    return tl.reduce(x, axis, tl.standard._elementwise_max)
