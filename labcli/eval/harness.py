"""EleutherAI's lm-evaluation-harness (`lm_eval`) as a library, on lab's shipped data sets.

lab's GSM8K, ARC (Easy, Challenge), SVAMP and StrategyQA are lm_eval task YAMLs in
`labcli/eval/harness_tasks/` (`dataset_path: json`, `data_files` inside labcli/data: no hub). The
YAMLs hold `{LAB_DATA}` / `{CACHE}` placeholders; `build_task_dir` writes them filled in (with their
`utils.py`) into a folder, normally the run's, which becomes the TaskManager's `include_path`, so a
run folder keeps the exact task configs it was scored with. A model is scored through lm_eval's own
Hugging Face wrapper (`HFLM`, given the model object: a merged model, a PEFT model or a quantized one)
and `lm_eval.simple_evaluate`; stderr is lm_eval's (the closed form for means).

    from labcli.eval import harness
    scores = harness.evaluate(model, tokenizer, "causal-lm", ["gsm8k", "arc_easy"], run.path("harness"), limit=50)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli import runs
from labcli.config import Section

TASK_DIR = Path(__file__).parent / "harness_tasks"
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
# lab's short name -> (lm_eval task, the metric reported as its score)
TASKS: dict[str, tuple[str, str]] = {
    "gsm8k": ("lab_gsm8k", "exact_match,flexible-extract"),
    "arc_easy": ("lab_arc_easy", "acc"),
    "arc_challenge": ("lab_arc_challenge", "acc"),
    "svamp": ("lab_svamp", "exact_match,flexible-extract"),
    "strategyqa": ("lab_strategyqa", "acc"),
}

TaskName = Literal["gsm8k", "arc_easy", "arc_challenge", "svamp", "strategyqa"]


class HarnessSettings(Section):
    """Harness scoring inside a training recipe (`lab finetune instruct`): small limits keep it minutes."""

    tasks: list[TaskName] = Field(["gsm8k", "arc_easy", "arc_challenge", "svamp", "strategyqa"],
                                  description="lab's local harness tasks to score the trained model on ([]: none)")
    limit: int | None = Field(30, ge=1, description="First N test documents per task (null: all)")
    max_gen_toks: int | None = Field(128, ge=1, description="Cap on generated tokens for GSM8K / SVAMP (null: the "
                                     "tasks' own 256 / 128); a cap can only lower their scores")
    batch_size: int = Field(16, ge=1, description="Requests per forward pass")


def build_task_dir(dest: Path, cache: Path | None = None) -> Path:
    """Write the task YAMLs (placeholders filled: the package's data folder, and `datasets`' Arrow cache
    of it, by default LAB_HOME/harness-datasets: 14 MB not worth copying into every run) and their
    utils.py into `dest`; returns `dest`, an lm_eval include_path."""
    from labcli.paths import lab_home

    dest = Path(dest)
    cache = Path(cache or lab_home() / "harness-datasets").resolve()

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        for src in sorted(TASK_DIR.iterdir()):
            if src.suffix in (".yaml", ".py"):
                text = src.read_text(encoding="utf-8")
                text = text.replace("{LAB_DATA}", str(DATA_DIR)).replace("{CACHE}", str(cache))
                (tmp / src.name).write_text(text, encoding="utf-8")

    runs.replace_dir(dest, write)
    return dest


def task_manager(task_dir: Path):
    """An lm_eval TaskManager that knows lab's tasks only (lm_eval's own ~10k YAMLs are not indexed)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(task_dir), include_defaults=False)


def wrap(model, tokenizer, task: str, batch_size: int = 16, max_length: int | None = None):
    """lm_eval's HFLM around a model object in this process (causal or seq2seq)."""
    from lm_eval.models.huggingface import HFLM

    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    max_length = max_length or getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    return HFLM(pretrained=model, tokenizer=tokenizer, backend="seq2seq" if task == "seq2seq" else "causal",
                batch_size=batch_size, max_length=max_length)


def evaluate(model, tokenizer, task: str, names: list[str], task_dir: Path, *, limit: int | None = None,
             batch_size: int = 16, num_fewshot: int | None = None, max_gen_toks: int | None = None, seed: int = 0) -> dict:
    """Score `model` on lab's tasks `names` (keys of TASKS) with lm_eval; `limit` = first N test docs each.

    `max_gen_toks` caps generation (generate_until tasks) below the task's own limit.
    Returns {"tasks": {name: {"metric", "score", "stderr", "n"}}, "limit", "num_fewshot", "max_gen_toks", "lm_eval"}."""
    import lm_eval
    from lm_eval import simple_evaluate

    manager = task_manager(build_task_dir(task_dir))
    lm = wrap(model, tokenizer, task, batch_size)
    was_training = model.training
    model.eval()
    try:
        out = simple_evaluate(lm, tasks=[TASKS[n][0] for n in names], task_manager=manager, limit=limit,
                              num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=1000,
                              gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None,
                              random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)
    finally:
        model.train(was_training)
    scores = {}
    for name in names:
        lm_task, metric = TASKS[name]
        row = out["results"][lm_task]
        key, filt = metric.split(",") if "," in metric else (metric, "none")
        stderr = row.get(f"{key}_stderr,{filt}")
        scores[name] = {"metric": metric, "score": round(float(row[f"{key},{filt}"]), 4),
                        "stderr": round(float(stderr), 4) if isinstance(stderr, (int, float)) and not math.isnan(stderr) else None,
                        "n": int(out["n-samples"][lm_task]["effective"])}
    return {"tasks": scores, "limit": limit, "num_fewshot": num_fewshot, "max_gen_toks": max_gen_toks,
            "lm_eval": lm_eval.__version__}


def columns(result: dict) -> dict:
    """{"harness_gsm8k": score, ...}: one column per task for a recipe's table."""
    return {f"harness_{name}": row["score"] for name, row in result["tasks"].items()}


# `lab finetune instruct` as the eval recipes' default model (its own harness scores off: they are what is run)
DEFAULT_RUN = ["harness.tasks=[]"]


def load_scored(run: str = "", model: str = "", device=None, why: str = "no run given: scoring"):
    """(model, tokenizer, task, source name) of a run folder (its model/, or for a LoRA8 run its adapter/
    on the int8 base it was trained on), a model folder or tiny-* preset; with neither, the default
    `lab finetune instruct` run (built once, cached under LAB_HOME)."""
    from labcli.models import load_model
    from labcli.serving.source import resolve

    if not run and not model:
        run = str(runs.prerequisite("finetune", "instruct", DEFAULT_RUN, f"{why} the default instruct run"))
    folder = Path(run).expanduser() if run else None
    if folder and not (folder / "model").is_dir() and (folder / "adapter" / "adapter_config.json").is_file():
        return *load_adapter_run(folder), run
    source = resolve(run=run, model=model)
    loaded = load_model(str(source.model_dir), source.task)
    return loaded.model.to(device or "cpu"), loaded.tokenizer, source.task, run or model


def load_adapter_run(folder: Path):
    """A run that saved only its adapter (`lab finetune instruct method=lora8`: merging into an int8 base
    would change what was trained): the base from adapter_config.json, quantized as in training, plus the adapter."""
    import json

    from peft import PeftModel

    from labcli.models import load_model

    config = json.loads((folder / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8")) if (folder / "summary.json").is_file() else {}
    base = config["base_model_name_or_path"]
    task = summary.get("task") or ("seq2seq" if config.get("task_type") == "SEQ_2_SEQ_LM" else "causal-lm")
    loaded = load_model(base, task, quantize_8bit=summary.get("method") == "lora8")
    return PeftModel.from_pretrained(loaded.model, str(folder / "adapter")), loaded.tokenizer, loaded.task
