"""lab reproduce recurrentgpt: the world, the verdicts, bad settings, a tiny real run (slow)."""

import json
import random

import pytest

from labcli.instruct.recurrentgpt import parse_output
from labcli.recipes.reproduce import recurrentgpt


def test_training_texts_are_recurrence_steps_and_questions_in_the_prompt_formats():
    texts = recurrentgpt.training_texts(4, random.Random(0))
    step, qa = texts[0], texts[1]
    assert step.startswith("memory : ") and "\nparagraph : " in step
    out = parse_output(step.split("\nparagraph :", 1)[1])
    assert " walks to the " in out["paragraph"] and out["memory"].endswith(".") and " goes to the " in out["plan"]
    # the paragraph follows the plan it was written from
    planned = step.split("\nplan : ", 1)[1].split("\n")[0]
    assert out["paragraph"].startswith(planned.replace(" goes to", " walks to"))
    context, question = qa.split("\nquestion : ")
    name, pet = question.split()[0], question.split()[-1]
    assert recurrentgpt.fact(name, pet) in context and pet in recurrentgpt.PETS


def test_recall_verdict_needs_the_window_baseline_near_chance():
    assert recurrentgpt.recall_verdict(0.95, 0.1, 0.9, 0.1) == "holds"
    assert recurrentgpt.recall_verdict(0.95, 0.5, 0.9, 0.1) == "partly"  # the facts were not out of reach
    assert recurrentgpt.recall_verdict(0.6, 0.1, 0.9, 0.1) == "partly"
    assert recurrentgpt.recall_verdict(0.2, 0.1, 0.9, 0.1) == "does not hold"
    assert recurrentgpt.recall_verdict(None, None, 0.9, 0.1) == "does not hold"


def test_endpoint_without_model_name_is_one_line_error(lab_main):
    result = lab_main("reproduce", "recurrentgpt", "model=http://127.0.0.1:9/v1")
    assert result.returncode == 2 and "model_name" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_tiny_run_writes_the_claims_table(run_lab, tmp_path):
    run_lab("reproduce", "recurrentgpt", "--output", str(tmp_path / "r"), "train_examples=150", "train.max_steps=2",
            "train.batch_size=4", "train.micro_batch_size=4", "width=16", "heads=2", "layers=1", "context=48",
            "stories=1", "steps=3", "facts=2")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["questions"] == 2 and len(summary["claims"]) == 3 and summary["mean_text_tokens"] > 0
    assert "## A generated text" in (tmp_path / "r" / "report.md").read_text()
