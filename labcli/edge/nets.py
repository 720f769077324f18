"""Small image classifiers for 28x28 grey digits, built from config (no weights are downloaded).

`build(arch, seed)` returns a fresh fp32 model:
* `cnn`: lab's SmallCNN (labcli.detect.vision: conv16-conv32-fc128-fc10), the digits CNN of `lab detect`.
* `mobilenet-v3-small`: MobileNetV3-small-style (Howard et al. 2019): inverted residual blocks with depthwise
  convolutions, squeeze-and-excitation and hard-swish, scaled down for 28x28 inputs (table MOBILENET below).
* `squeezenet`: SqueezeNet-style (Iandola et al. 2016): Fire modules (1x1 squeeze, then 1x1 and 3x3 expand,
  concatenated; batch norm after each conv) and a 1x1 convolution classifier averaged over the 7x7 positions,
  no fully connected layer.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from labcli.detect.vision import SmallCNN

ARCHS = ("cnn", "mobilenet-v3-small", "squeezenet")

# kernel, expanded channels, out channels, squeeze-excite, activation, stride (MobileNetV3-small's first blocks,
# with strides for 28x28: 28 -> 14 -> 7)
MOBILENET = [
    (3, 16, 16, True, "relu", 2),
    (3, 72, 24, False, "relu", 2),
    (3, 88, 24, False, "relu", 1),
    (5, 96, 40, True, "hardswish", 1),
    (5, 120, 40, True, "hardswish", 1),
]


def _act(name: str) -> nn.Module:
    return nn.Hardswish() if name == "hardswish" else nn.ReLU()


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = "relu") -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, _act(act)) if act else nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduce: int = 4):
        super().__init__()
        hidden = max(8, channels // reduce)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.relu = nn.Conv2d(channels, hidden, 1), nn.ReLU()
        self.fc2, self.gate = nn.Conv2d(hidden, channels, 1), nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str, stride: int):
        super().__init__()
        layers = [conv_bn(cin, expanded, 1, act=act)] if expanded != cin else []
        layers.append(conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act))  # depthwise
        if se:
            layers.append(SqueezeExcite(expanded))
        layers.append(conv_bn(expanded, cout, 1, act=None))  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV3Style(nn.Module):
    def __init__(self, config=MOBILENET, classes: int = 10, stem: int = 16, last: int = 144, hidden: int = 256):
        super().__init__()
        blocks, cin = [], stem
        for kernel, expanded, cout, se, act, stride in config:
            blocks.append(InvertedResidual(cin, kernel, expanded, cout, se, act, stride))
            cin = cout
        self.features = nn.Sequential(conv_bn(1, stem, 3, act="hardswish"), *blocks, conv_bn(cin, last, 1, act="hardswish"))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(last, hidden), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = conv_bn(cin, squeeze, 1)
        self.expand1 = conv_bn(squeeze, expand, 1)
        self.expand3 = conv_bn(squeeze, expand, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


class SqueezeNetStyle(nn.Module):
    """SqueezeNet's layout with batch norm after every conv (without it this depth did not train here: the
    plain version predicted one class after 4 epochs) and no ReLU on the logits."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 32, 3), nn.MaxPool2d(2),  # 14x14
            Fire(32, 16, 32), Fire(64, 16, 32), nn.MaxPool2d(2),  # 7x7
            Fire(64, 24, 48), Fire(96, 24, 48))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Conv2d(96, classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(arch: str, seed: int = 0, width: int = 16) -> nn.Module:
    """A fresh fp32 model of `arch` (in eval mode), initialised from `seed`; `width` is SmallCNN's first conv."""
    torch.manual_seed(seed)
    if arch == "cnn":
        model = SmallCNN(width=width)
    elif arch == "mobilenet-v3-small":
        model = MobileNetV3Style()
    elif arch == "squeezenet":
        model = SqueezeNetStyle()
    else:
        raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")
    return model.eval()


def head(model: nn.Module) -> nn.Module:
    """The layer that writes the class logits (the last Linear/Conv2d): channel pruning must keep its outputs."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Parameters (weights and biases) of a float or quantized model; with nonzero=True only the non-zero ones."""
    tensors = [p.detach() for p in model.parameters()]
    for m in model.modules():  # quantized modules hold packed weights behind a weight() method, not nn.Parameters
        if inspect.ismethod(getattr(m, "weight", None)):
            w = m.weight()
            tensors.append(w.dequantize() if w.is_quantized else w)
            b = m.bias() if inspect.ismethod(getattr(m, "bias", None)) else None
            if b is not None:
                tensors.append(b)
    return int(sum((t != 0).sum() if nonzero else t.numel() for t in tensors))
