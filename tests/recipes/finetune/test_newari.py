"""`lab finetune newari` through the real CLI: each method trains a few steps and writes scores and reports."""

import json

import pytest

PRETRAIN = ("pretrain=[train.max_steps=2,train.batch_size=4,train.micro_batch_size=4,train.eval_every=0,"
            "train.save_every=0,train.tensorboard=false,dev_instances=4,\"extra_english=[sms]\"]")
FAST = ["train.max_steps=3", "train.batch_size=8", "train.micro_batch_size=8", "train.eval_every=0",
        "train.tensorboard=false", "eval.max_examples=12", "eval.beams=[1,2]", "eval.baseline=false",
        "vocab_size=600", "max_target_len=8", PRETRAIN]


@pytest.mark.slow
def test_method_all_runs_each_method_and_compares(run_lab, tmp_path):
    """--method all: full, LoRA and QLoRA on the pretrained base, and QLoRA on the random-init base, each
    train a few steps in their own process; one table with the dictionary baseline on the same sentences."""
    out = tmp_path / "all"
    table = run_lab("finetune", "newari", "--method", "all", *FAST, "jobs=2", "--output", str(out)).stdout
    for name in ("full", "lora", "qlora", "qlora-random-base"):
        s = json.loads((out / name / "summary.json").read_text())
        method = name.split("-")[0]
        assert s["method"] == method and s["steps"] == 3
        assert s["model"] == ("tiny-mbart" if name == "qlora-random-base" else "tiny-mbart-pretrained")
        assert set(s["scores"]) == {"greedy", "beam2", "greedy-nr3"}
        by_domain = s["scores"]["greedy"]["by_domain"]
        assert by_domain["all"]["n"] == 12 and set(by_domain) == {"all", "conversation", "general"}
        assert "nw:2" in by_domain["all"]["chrf++_signature"]
        rows = [json.loads(line) for line in (out / name / "errors.jsonl").read_text().splitlines()]
        assert len(rows) == 12 and {"src", "ref", "hyp", "chrf++", "empty", "latin_script"} <= set(rows[0])
        assert "Worst sentences" in (out / name / "report.md").read_text()
        assert (out / name / "scores_by_domain.png").exists() and (out / name / "model" / "config.json").exists()
        if method != "full":
            assert (out / name / "adapter" / "adapter_config.json").exists()
            assert s["trainable_params"] < s["total_params"]
        assert f"| {name} |" in table
    report = (out / "report.md").read_text()
    assert "silver" in report and "chrF++ conversation" in report and (out / "chrf_by_domain.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"full", "lora", "qlora", "qlora-random-base"}
    assert [r["row"] for r in summary["rows"]] == ["dictionary (word by word)", "full", "lora", "qlora", "qlora-random-base"]


@pytest.mark.slow
def test_profiled_run_then_eval_only_rescores_it(run_lab, tmp_path):
    """One real run serves both: --profile writes a trace and top ops; --eval-only re-scores its model."""
    src = tmp_path / "src"
    run_lab("finetune", "newari", "--method", "full", "--profile", *FAST, "train.max_steps=6", "eval.beams=[1]",
            "--output", str(src))
    assert (src / "profile" / "trace.json").stat().st_size > 0
    assert "Top ops" in (src / "profile" / "top_ops.md").read_text()
    out = tmp_path / "rescored"
    stdout = run_lab("finetune", "newari", "--eval-only", "--run", str(src), "eval.max_examples=12", "eval.beams=[1]",
                     "--output", str(out)).stdout
    assert "test (12 sentences, greedy, no_repeat_ngram_size 0): chrF++" in stdout and "report.md" in stdout
    s = json.loads((out / "summary.json").read_text())
    first = json.loads((src / "summary.json").read_text())
    assert s["rescored_run"] == str(src)
    assert s["chrf++"] == first["scores"]["greedy"]["by_domain"]["all"]["chrf++"]


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


def test_sub_runs_run_at_most_jobs_at_once_and_failures_are_named(tmp_path):
    import sys

    from labcli.recipes.finetune.newari import run_sub_runs

    # each sub-run records how many were running when it started (a file per running process)
    script = ("import os, sys, time; d = sys.argv[1]; open(os.path.join(d, sys.argv[2]), 'w').close(); "
              "n = len(os.listdir(d)); time.sleep(0.1); os.remove(os.path.join(d, sys.argv[2])); "
              "print(n, file=open(os.path.join(d, '..', sys.argv[2] + '.n'), 'w')); sys.exit(sys.argv[2] == 'bad')")
    (tmp_path / "live").mkdir()
    todo = [(name, [sys.executable, "-c", script, str(tmp_path / "live"), name]) for name in ("a", "b", "bad", "c")]
    assert run_sub_runs(todo, 2) == ["bad"]
    seen = [int((tmp_path / f"{name}.n").read_text()) for name in ("a", "b", "bad", "c")]
    assert max(seen) <= 2, seen  # a, b, bad and c all ran, never more than two at once
