"""labcli.engine.backprop: exact saved-bytes counts; every technique keeps the baseline's gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from labcli.engine import backprop as bt


@pytest.fixture(scope="module")
def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=4, n_embd=64, n_head=4, vocab_size=128, n_positions=128, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    ids = torch.randint(0, 128, (2, 32), generator=torch.Generator().manual_seed(1))
    return GPT2LMHeadModel(cfg), {"input_ids": ids, "labels": ids}


def test_counter_counts_exact_bytes():
    layer = torch.nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 32)
    with bt.SavedTensors(layer) as saved:
        y = layer(x).exp()  # saves x for the weight grad and exp's own output; the weight is a parameter
    assert saved.bytes == x.nbytes + y.nbytes


def test_every_technique_matches_the_baseline(gpt2):
    base, batch = gpt2
    ref, ref_saved, ref_loss = bt.measure_grads(copy.deepcopy(base), batch)
    assert ref_saved.bytes > 0
    ordered = {}
    for technique in bt.TECHNIQUES:
        model = copy.deepcopy(base)
        bt.apply(model, technique, every_k=2)
        grads, saved, loss = bt.measure_grads(model, batch)
        ordered[technique] = saved
        assert loss == pytest.approx(ref_loss, abs=1e-6), technique
        assert bt.max_grad_diff(grads, ref) <= 1e-6, technique
        if technique in bt.CHECKPOINTING:
            assert saved.bytes < ref_saved.bytes, technique
    # full checkpointing keeps only block inputs; every-k keeps more; offload keeps nothing on the device
    assert ordered["ckpt-every-block"].bytes == ordered["hf-checkpointing"].bytes < ordered["ckpt-every-k"].bytes
    assert ordered["offload-cpu"].bytes == 0 and ordered["offload-cpu"].offloaded_bytes >= ref_saved.bytes


def test_the_training_loss_runs_the_technique(gpt2):
    """What the engine calls (CountingLoss on the patched model) counts what the technique keeps."""
    base, batch = gpt2
    counts = {}
    for technique in bt.TECHNIQUES:
        model = copy.deepcopy(base)
        bt.apply(model, technique, every_k=2)
        counting = bt.CountingLoss(model)
        counting(model, batch).backward()
        counts[technique] = counting.counts[0]
    saved, offloaded = counts.pop("baseline")
    assert saved > 0 and offloaded == 0
    kept, out = counts.pop("offload-cpu")
    assert kept == 0 and out >= saved  # every saved activation went to host memory (views copied separately)
    assert all(kept < saved and out == 0 for kept, out in counts.values())


def test_offload_applies_without_a_counter(gpt2):
    """A patched model offloads in any forward: the saved tensors autograd holds are host copies."""
    base, batch = gpt2
    model = copy.deepcopy(base)
    bt.apply(model, "offload-cpu")
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        loss = model(**batch).loss  # the offloading hooks inside take precedence: nothing reaches ours
    loss.backward()
    assert packed == [] and all(p.grad is not None for p in model.parameters())
