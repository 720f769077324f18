"""lab's local lm-evaluation-harness tasks: the YAMLs load offline (no hub), the ARC/SVAMP doc
processing is right, and lm_eval scores a tiny model on every task."""

from __future__ import annotations

import pytest

from labcli.eval import harness


def test_task_dir_fills_the_placeholders(tmp_path):
    folder = harness.build_task_dir(tmp_path / "tasks", cache=tmp_path / "cache")
    yamls = sorted(folder.glob("*.yaml"))
    assert [y.stem for y in yamls] == sorted(t for t, _ in harness.TASKS.values())
    for yaml in yamls:
        text = yaml.read_text()
        assert "{LAB_DATA}" not in text and "{CACHE}" not in text and str(harness.DATA_DIR) in text


def load_utils():
    import importlib.util

    spec = importlib.util.spec_from_file_location("harness_utils", harness.TASK_DIR / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    return utils


def test_arc_options_are_parsed_out_of_the_llm_adapters_text():
    from labcli.data import arc

    row = {"instruction": arc.PREFIX + "Which is a gas?\n\nAnswer1: ice Answer2: steam Answer3: dry rock\n\n"
                          "Answer format: answer1/answer2/answer3", "answer": "answer2"}
    assert load_utils().arc_doc(row) == {"question": "Which is a gas?", "choices": ["ice", "steam", "dry rock"], "label": 1}


def test_svamp_target_is_a_plain_number_and_the_split_is_labs():
    from labcli.data import svamp

    doc = load_utils().svamp_doc({"Body": " A has 3 . ", "Question": "How many?", "Answer": 51.0})
    assert doc == {"question": "A has 3 . How many?", "target": "51"}
    assert load_utils().svamp_doc({"Body": "b", "Question": "q", "Answer": 2.5})["target"] == "2.5"
    train, test = svamp.split_indices("train"), svamp.split_indices("test")
    assert len(test) == 300 and not set(train) & set(test) and len(set(train) | set(test)) == 1000


@pytest.mark.slow  # builds a tiny GPT-2 and loads five data sets through `datasets` (about 10 s)
def test_lm_eval_scores_a_tiny_model_on_every_local_task(tmp_path, lab_home):
    pytest.importorskip("lm_eval")
    from labcli.models import load_model

    manager = harness.task_manager(harness.build_task_dir(tmp_path / "index"))
    assert sorted(manager.all_tasks) == sorted(t for t, _ in harness.TASKS.values())

    loaded = load_model("tiny-gpt2", "causal-lm")
    out = harness.evaluate(loaded.model, loaded.tokenizer, "causal-lm", list(harness.TASKS), tmp_path / "tasks", limit=3,
                           batch_size=4)
    assert set(out["tasks"]) == set(harness.TASKS)
    for name, row in out["tasks"].items():
        assert row["n"] == 3 and 0.0 <= row["score"] <= 1.0 and row["metric"] == harness.TASKS[name][1]
    # the data came from the package, its Arrow cache under LAB_HOME (nothing from a hub)
    assert (lab_home / "harness-datasets" / "json").is_dir()
    assert set(harness.columns(out)) == {f"harness_{n}" for n in harness.TASKS}
