"""`lab finetune newari` through the real CLI: each method trains a few steps and writes scores and reports."""

import json

import pytest

FAST = ["train.max_steps=3", "train.batch_size=8", "train.micro_batch_size=8", "train.eval_every=0",
        "train.tensorboard=false", "eval.max_examples=12", "eval.beams=[1,2]", "eval.baseline=false",
        "vocab_size=600", "max_target_len=8"]


@pytest.mark.slow
def test_method_all_runs_each_method_and_compares(run_lab, tmp_path):
    """--method all: full, LoRA and QLoRA each train a few steps in their own process and write scores."""
    out = tmp_path / "all"
    table = run_lab("finetune", "newari", "--method", "all", *FAST, "--output", str(out)).stdout
    for method in ("full", "lora", "qlora"):
        s = json.loads((out / method / "summary.json").read_text())
        assert s["method"] == method and s["steps"] == 3
        assert set(s["scores"]) == {"greedy", "beam2"}
        by_domain = s["scores"]["greedy"]["by_domain"]
        assert by_domain["all"]["n"] == 12 and {"conversation", "general", "lexicon", "software_ui"} <= set(by_domain)
        assert "nw:2" in by_domain["all"]["chrf++_signature"]
        rows = [json.loads(line) for line in (out / method / "errors.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and {"src", "ref", "hyp", "chrf++", "empty", "latin_script"} <= set(rows[0])
        assert "Worst sentences" in (out / method / "report.md").read_text()
        assert (out / method / "scores_by_domain.png").exists() and (out / method / "model" / "config.json").exists()
        if method != "full":
            assert (out / method / "adapter" / "adapter_config.json").exists()
            assert s["trainable_params"] < s["total_params"]
        assert f"| {method} |" in table
    report = (out / "report.md").read_text()
    assert "silver" in report and "chrF++ lexicon" in report and (out / "chrf_by_domain.png").exists()
    assert set(json.loads((out / "summary.json").read_text())["methods"]) == {"full", "lora", "qlora"}


@pytest.mark.slow
def test_eval_only_rescores_a_run(run_lab, tmp_path):
    src = tmp_path / "src"
    run_lab("finetune", "newari", "--method", "full", *FAST, "--output", str(src))
    out = tmp_path / "rescored"
    stdout = run_lab("finetune", "newari", "--eval-only", "--run", str(src), "eval.max_examples=12", "eval.beams=[1]",
                     "--output", str(out)).stdout
    assert "test (12 sentences, greedy): BLEU" in stdout and "report.md" in stdout
    s = json.loads((out / "summary.json").read_text())
    first = json.loads((src / "summary.json").read_text())
    assert s["rescored_run"] == str(src)
    assert s["chrf++"] == first["scores"]["greedy"]["by_domain"]["all"]["chrf++"]


@pytest.mark.slow
def test_profile_writes_trace_and_top_ops(run_lab, tmp_path):
    out = tmp_path / "prof"
    run_lab("finetune", "newari", "--method", "full", "--profile", *FAST, "train.max_steps=6",
            "eval.beams=[1]", "--output", str(out))
    assert (out / "profile" / "trace.json").stat().st_size > 0
    assert "Top ops" in (out / "profile" / "top_ops.md").read_text()


@pytest.mark.parametrize("content,message", [
    (b"en\tnew\nhello\tx\n", "missing column(s) domain"),
    (b"en\tnew\tdomain\nhello\t\tgeneral\n", ":2: empty new side"),
    (b"en\tnew\tdomain\nbad\t\xff\tgeneral\n", ":2: not UTF-8"),
])
def test_bad_tsv_is_one_line_and_leaves_no_run(lab_main, tmp_path, content, message):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(content)
    proc = lab_main("finetune", "newari", "--data", "bad.tsv", *FAST)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert not (tmp_path / "runs").exists()
