"""lab reproduce lora: the exact checks (GPT-2 M LoRA count, merged = adapter), error paths, a tiny real run (slow)."""

import json
import pathlib

import pytest
import torch

from labcli.recipes.reproduce import lora


def test_lora_r4_on_wq_wv_of_gpt2_medium_trains_393216_parameters():
    counted = lora.gpt2_medium_lora_params(4, "qv")
    assert counted["trainable"] == 393_216 == 24 * 2 * 4 * (1024 + 1024)  # the paper's "0.35M"
    assert 354_000_000 < counted["base_total"] < 356_000_000


def test_merged_weights_give_the_adapters_logits():
    torch.manual_seed(0)
    from transformers import GPTNeoForCausalLM

    base = GPTNeoForCausalLM(lora.gpt_config(32, 2, 2, 100, 32)).eval()
    model = lora.with_method(base, lora.Arm(name="x", targets="qv", r=4), alpha=32, seed=0)
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter change the output
            torch.nn.init.normal_(p, std=0.1)
    batch = {"input_ids": torch.randint(0, 100, (2, 12))}
    with torch.no_grad():
        moved = (model(**batch).logits - base(**batch).logits).abs().max().item()
    assert moved > 1e-3
    assert lora.merge_check(model, batch) < 1e-9  # float64: the identity holds up to rounding


def test_bad_arm_is_one_line_error(lab_main):
    result = lab_main("reproduce", "lora", "arms=[{name: x, method: prefix}]")
    assert result.returncode == 2 and "method 'prefix'" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "lora", "--output", str(tmp_path / "r"), "train_mrs=60", "test_mrs=12", "pretrain.max_steps=6",
            "finetune.max_steps=4", "bootstrap=0", "model.d_model=32", "model.n_layers=1",
            'arms=[{name: full, method: full}, {name: "lora r=4 Wq,Wv", r: 4}, {name: "lora r=1 Wq,Wv", r: 1}, '
            '{name: "lora r=64 Wq,Wv", r: 64}, {name: "lora r=8 Wq", targets: q, r: 8}, '
            '{name: "lora r=2 Wq,Wk,Wv,Wo", targets: qkvo, r: 2}]')
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["gpt2_medium_lora_r4_qv"]["trainable"] == 393_216
    assert len(summary["claims"]) == 5 and summary["merge_max_abs_logit_diff"] < 1e-9
    assert "| claim | paper | our setting | ours | verdict |" in pathlib.Path(tmp_path / "r" / "report.md").read_text()
