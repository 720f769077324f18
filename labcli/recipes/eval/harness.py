"""`lab eval harness`: lm-evaluation-harness scores of any run's model on lab's local tasks
(labcli.eval.harness); the summary holds each task's score, stderr and document count."""

from __future__ import annotations

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.eval.harness import TaskName
from labcli.runs import Run


class Config(RecipeConfig):
    run: str = Field("", description="A training run folder (holds model/); empty with no model: a small `lab finetune instruct` run")
    model: str = Field("", description="Instead of run: a save_pretrained folder or a tiny-* preset")
    tasks: list[TaskName] = Field(["gsm8k", "arc_easy", "arc_challenge", "svamp", "strategyqa"], min_length=1,
                                  description="lab's local harness tasks")
    limit: int | None = Field(200, ge=1, description="First N test documents per task (null: all)")
    num_fewshot: int | None = Field(None, ge=0, description="Few-shot examples (null: each task's default, 0)")
    max_gen_toks: int | None = Field(None, ge=1, description="Cap on generated tokens for GSM8K / SVAMP (null: the tasks' own)")
    batch_size: int = Field(16, ge=1, description="Requests per forward pass")


def run(cfg: Config, ctx: Run) -> None:
    from labcli.engine.distributed import pick_device
    from labcli.eval import harness
    from labcli.eval.tables import markdown_table, print_table

    model, tokenizer, task, name = harness.load_scored(cfg.run, cfg.model, pick_device(cfg.device))
    result = harness.evaluate(model, tokenizer, task, cfg.tasks, ctx.path("tasks"), limit=cfg.limit,
                              batch_size=cfg.batch_size, num_fewshot=cfg.num_fewshot,
                              max_gen_toks=cfg.max_gen_toks, seed=cfg.seed)
    rows = [{"task": t, **r} for t, r in result["tasks"].items()]
    columns = ["task", "metric", "score", "stderr", "n"]
    cap = cfg.max_gen_toks or "the tasks' own"
    ctx.write_summary({"scored": name, "task": task, **harness.columns(result), "harness": result, "rows": rows})
    ctx.write_report(f"# lab eval harness: {name}\n\nlm_eval {result['lm_eval']}, limit {cfg.limit}, "
                     f"few-shot {cfg.num_fewshot or 0}, generation cap {cap}; stderr is lm_eval's (over documents).\n\n"
                     f"{markdown_table(rows, columns)}\n")
    print_table(rows, columns, title=f"lm-evaluation-harness: {name}")
