"""`lab finetune instruct`: a bad data file in-process (fast); LoRA8 on a Mistral shape and QLoRA on a T5
shape through the real CLI, each scored by lm-evaluation-harness as it sits in memory (slow)."""

from __future__ import annotations

import json

import pytest


def test_a_bad_data_file_is_a_one_line_error(lab_main, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x"}\n', encoding="utf-8")
    result = lab_main("finetune", "instruct", f"data={bad}")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "record 1 has no instruction or no output" in result.stderr
    assert not (tmp_path / "runs").exists()


TINY = ("train.max_steps=2", "train.batch_size=4", "train.micro_batch_size=4", "train.tensorboard=false", "max_len=96",
        "harness.tasks=[arc_easy,svamp]", "harness.limit=2")


@pytest.mark.slow
@pytest.mark.parametrize("model,method", [("tiny-mistral", "lora8"), ("tiny-t5", "qlora")])
def test_quantized_lora_trains_on_each_shape(run_lab, tmp_path, model, method):
    proc = run_lab("finetune", "instruct", f"model={model}", f"method={method}", *TINY)
    assert f"{model} ({method})" in proc.stdout
    run = next((tmp_path / "runs").iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert s["method"] == method and 0 < s["trainable_params"] < s["total_params"]
    assert s["eval_loss"] is not None and (run / "adapter").is_dir()
    # the harness scored the quantized base + adapter (causal and seq2seq) on two documents per task
    assert s["harness_arc_easy"] in (0.0, 0.5, 1.0) and s["harness"]["tasks"]["svamp"]["n"] == 2
    if method == "lora8":  # no merged model/: `lab eval` loads the int8 base + the adapter
        from peft import PeftModel

        from labcli.eval.harness import load_scored

        model, _, task, _ = load_scored(str(run))
        assert isinstance(model, PeftModel) and task == "causal-lm" and not (run / "model").exists()
