"""Channel pruning removes channels (a smaller model with the same output shape); magnitude pruning zeroes weights."""

from __future__ import annotations

import pytest
import torch

from labcli.edge import nets, prune


@pytest.mark.parametrize("arch", ["cnn", "squeezenet", "mobilenet-v3-small"])
def test_channel_pruning_removes_channels_and_keeps_the_classes(arch):
    model = nets.build(arch, seed=0)
    x = torch.rand(3, 1, 28, 28)
    small = prune.channels(model, 0.5, x)
    before, after = prune.channel_counts(model), prune.channel_counts(small)
    assert len(before) == len(after) and after[-1] == before[-1] == 10
    assert sum(after[:-1]) < 0.6 * sum(before[:-1])
    assert nets.count_parameters(small) < 0.5 * nets.count_parameters(model)
    with torch.no_grad():
        assert small(x).shape == model(x).shape == (3, 10)
    assert prune.channel_counts(model) == before  # a copy was pruned


def test_magnitude_pruning_zeroes_the_smallest_weights_globally():
    model = nets.build("cnn", seed=0, width=4)
    pruned = prune.magnitude(model, 0.7)
    assert prune.sparsity(pruned) == pytest.approx(0.7, abs=1e-3)
    weights = torch.cat([m.weight.detach().flatten() for m in pruned.modules() if isinstance(m, prune.PRUNABLE)])
    originals = torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, prune.PRUNABLE)])
    assert originals[weights != 0].abs().min() >= originals[weights == 0].abs().max()  # global L1 order
    permanent = prune.make_permanent(pruned)
    assert not any(n.endswith("_orig") for n, _ in permanent.named_parameters())
    assert nets.count_parameters(permanent) == nets.count_parameters(model)
    assert nets.count_parameters(permanent, nonzero=True) < 0.35 * nets.count_parameters(model)
