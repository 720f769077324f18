"""INT8 really is int8: the quantized models hold int8 weights and still compute (nearly) the fp32 logits."""

from __future__ import annotations

import torch

from labcli.edge import nets, quantize


def images(n=32, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_dynamic_int8_stores_linear_weights_as_int8_and_leaves_convs_float():
    model = nets.build("cnn", seed=0, width=4)
    q = quantize.dynamic_int8(model)
    assert q.fc1.weight().dtype == torch.qint8 and q.fc2.weight().dtype == torch.qint8
    assert q.conv1.weight.dtype == torch.float32  # dynamic quantization has no conv kernels
    assert quantize.int8_weights(q) == (2, 2)
    assert model.fc1.weight.dtype == torch.float32  # the original is untouched
    x = images()
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()


def test_static_int8_quantizes_every_conv_and_linear():
    model = nets.build("cnn", seed=0, width=4)
    x = images(64)
    q = quantize.static_int8(model, x)
    assert quantize.int8_weights(q) == (4, 0)
    with torch.no_grad():
        ref, out = model(x), q(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()


def test_torchao_int8_weights_hold_int8_data():
    model = nets.build("cnn", seed=0, width=4)
    q = quantize.torchao_int8(model)
    assert quantize.int8_weights(q)[0] == 2
    assert quantize.int8_weights(model) == (0, 4)
