"""`lab eval judge`: win rate of a run's answers over a reference's on the 252 user-oriented
instructions, judged with positions swapped (labcli.instruct.judge), and what the judge can tell."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.errors import UserError
from labcli.runs import Run


class Config(RecipeConfig):
    run: str = Field("", description="A training run folder (holds model/); empty with no model: a small `lab finetune instruct` run")
    model: str = Field("", description="Instead of run: a save_pretrained folder or a tiny-* preset")
    reference: str = Field("human", description="human: the instructions' human-written answers; or a run folder, "
                           "model folder or tiny-* preset whose answers are the reference")
    judge: str = Field("run", description="run: the scored model judges (offline default); a hub id, local folder, "
                       "tiny-* preset or OpenAI-compatible endpoint http(s)://HOST/v1")
    judge_model: str | None = Field(None, description="Model name at the endpoint (with judge=http...)")
    judge_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's API key")
    instructions: int = Field(252, ge=2, le=252, description="The first N user-oriented instructions")
    max_new_tokens: int = Field(128, ge=1, description="Tokens per generated answer (greedy)")
    batch_size: int = Field(16, ge=1, description="Prompts per generate call")


def check(cfg: Config) -> list[str]:
    if cfg.judge.startswith(("http://", "https://")) and not cfg.judge_model:
        return ["an endpoint judge needs judge_model (hint: add judge_model=NAME, the name the server serves)"]
    return []


def records(n: int) -> list[dict]:
    from labcli.data import self_instruct

    return [{"instruction": t["instruction"], "input": t["instances"][0]["input"], "output": t["instances"][0]["output"]}
            for t in self_instruct.user_oriented()[:n]]


def question(record: dict) -> str:
    return record["instruction"] + (f"\n\n{record['input']}" if record["input"].strip() else "")


def run(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.engine.distributed import pick_device
    from labcli.eval import harness
    from labcli.eval.tables import markdown_table, print_table
    from labcli.instruct import judge as J

    if problems := check(cfg):
        raise UserError(problems[0])
    device = pick_device(cfg.device)
    recs = records(cfg.instructions)
    model, tokenizer, task, name = harness.load_scored(cfg.run, cfg.model, device, why="no run given: judging")
    if cfg.judge == "run":
        if task == "seq2seq":
            raise UserError(f"{name} is a seq2seq model and cannot judge (the judge reads a causal LM's next token)",
                            "pass judge=MODEL (a causal LM: folder, preset or http(s)://HOST/v1)")
        judge, judge_name = J.LMJudge(model, tokenizer, name), f"{name} (the scored model itself)"
    else:
        judge = J.load_judge(cfg.judge, cfg.judge_model, cfg.judge_key_env, cfg.seed, device)
        judge_name = judge.name
    mine = J.answers(model, tokenizer, task, recs, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    if cfg.reference == "human":
        theirs = [r["output"] for r in recs]
    else:
        folder = cfg.reference if (Path(cfg.reference).expanduser() / "summary.json").is_file() else ""  # a run
        ref_model, ref_tok, ref_task, _ = harness.load_scored(folder, "" if folder else cfg.reference, device)
        theirs = J.answers(ref_model, ref_tok, ref_task, recs, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    main = J.compare([{"instruction": question(r), "model": m, "reference": t} for r, m, t in zip(recs, mine, theirs)], judge)
    control = J.compare([{**c, "instruction": question(r)} for r, c in zip(recs, J.control_items(recs))], judge)
    runs.write_text(ctx.path("answers.jsonl"), "".join(
        json.dumps({"instruction": question(r), "answer": m, "reference": t, **row}) + "\n"
        for r, m, t, row in zip(recs, mine, theirs, main["rows"])))
    keys = ["n", "win_rate", "win_rate_stderr", "wins", "losses", "ties", "position_flip_rate", "first_position_share",
            "length_agreement"]
    rows = [{"comparison": f"{name} vs {cfg.reference}", **{k: main[k] for k in keys}},
            {"comparison": "control: right vs another instruction's human answer", **{k: control[k] for k in keys}}]
    summary = {"scored": name, "reference": cfg.reference, "judge": judge_name, **{k: main[k] for k in keys},
               "control_win_rate": control["win_rate"], "control_position_flip_rate": control["position_flip_rate"],
               "unparsed_verdicts": getattr(judge, "unparsed", None), "rows": rows}
    ctx.write_summary(summary)
    ctx.write_report(f"# lab eval judge: {name} vs {cfg.reference}\n\nJudge: {judge_name}. Each pair judged twice with "
                     "the positions swapped; a verdict counts only when it survives the swap, otherwise a tie. Win rate = "
                     "(wins + ties/2) / n. The control row asks the judge to prefer the right human answer over another "
                     "instruction's: 0.5 there means the judge cannot tell an answer from an unrelated one.\n\n"
                     f"{markdown_table(rows, ['comparison', *keys])}\n")
    print_table(rows, ["comparison", *keys], title=f"pairwise judge ({judge_name})")
