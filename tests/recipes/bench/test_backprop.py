"""`lab bench backprop`: every technique's gradients equal the baseline's; checkpointing saves less."""

from __future__ import annotations

import copy
import json

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
    ref, ref_saved, ref_loss = bt.measure_grads(copy.deepcopy(base), batch, "baseline")
    assert ref_saved.bytes > 0
    ordered = {}
    for technique in bt.TECHNIQUES:
        model = copy.deepcopy(base)
        bt.apply(model, technique, every_k=2)
        grads, saved, loss = bt.measure_grads(model, batch, technique)
        ordered[technique] = saved
        assert loss == pytest.approx(ref_loss, abs=1e-6), technique
        assert bt.max_grad_diff(grads, ref) <= 1e-6, technique
        if technique in bt.CHECKPOINTING:
            assert saved.bytes < ref_saved.bytes, technique
    # full checkpointing keeps only block inputs; every-k keeps more; offload keeps nothing on the device
    assert ordered["ckpt-every-block"].bytes == ordered["hf-checkpointing"].bytes < ordered["ckpt-every-k"].bytes
    assert ordered["offload-cpu"].bytes == 0 and ordered["offload-cpu"].offloaded_bytes >= ref_saved.bytes


def test_cli_smoke(run_lab, tmp_path):
    out = tmp_path / "bp"
    run_lab("bench", "backprop", "--seq-lens", "16,32", "--techniques", "ckpt-every-block,custom-mlp", "--steps", "2",
            "batch_size=2", "layers=2", "--output", str(out))
    summary = json.loads((out / "summary.json").read_text())
    cells = {(c["seq_len"], c["technique"]): c for c in summary["cells"]}
    assert set(cells) == {(s, t) for s in (16, 32) for t in ("baseline", "ckpt-every-block", "custom-mlp")}
    for (seq, technique), c in cells.items():
        assert c["max_grad_diff"] <= 1e-6 and c["peak_memory_mb"] > 0 and c["step_ms"] > 0
        if technique != "baseline":
            assert c["saved_bytes"] < cells[(seq, "baseline")]["saved_bytes"]
    assert summary["goals"] and "ckpt-every-block at seq 32" in summary["goals"][0]
    report = (out / "report.md").read_text()
    assert "| 32 | ckpt-every-block |" in report and "Hardware:" in report
    for png in ("activation_bytes.png", "peak_memory.png", "step_time.png"):
        assert (out / png).stat().st_size > 0


def test_unknown_technique_is_one_line(run_lab):
    proc = run_lab("bench", "backprop", "--techniques", "ckpt-everything", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown technique 'ckpt-everything'") and "Traceback" not in proc.stderr
