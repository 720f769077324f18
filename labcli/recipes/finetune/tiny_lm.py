"""Causal-LM finetuning on plain text: the engine's smallest end-to-end recipe."""

from __future__ import annotations

from labcli.models.causal_lm import CausalLMConfig, prepare
from labcli.runs import Run

RESUMABLE = True  # --resume continues from the newest checkpoint
MULTI_PROCESS = True  # --nproc N runs it under torch.distributed.run


class Config(CausalLMConfig):
    """All keys come from the shared causal-LM set-up (labcli/models/causal_lm.py)."""


def run(cfg: Config, ctx: Run) -> None:
    from labcli.data.text import collate_lm
    from labcli.engine.export import save_final_model
    from labcli.engine.trainer import train
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table

    loaded, model, params, train_set, eval_set = prepare(cfg)
    result = train(model, train_set, collate_lm, cfg.train, ctx, seed=cfg.seed, eval_set=eval_set)
    save_final_model(result.model, loaded.tokenizer, cfg.method, ctx.path("model"), ctx.path("adapter"))
    if not ctx.is_main:
        return
    summary = {"task": "causal-lm", "model": cfg.model, "method": cfg.method, **params,
               "steps": result.steps, "final_loss": result.final_loss, "eval_loss": result.eval_loss,
               "tokens": result.tokens, "wall_s": round(result.wall_s, 2), "peak_memory_mb": round(result.peak_memory_mb, 1)}
    ctx.write_summary(summary)
    plots.curves(ctx.metrics(), ["loss", "eval_loss"], ctx.path("loss.png"), f"{cfg.model} ({cfg.method})")
    table = markdown_table([[k, v] for k, v in summary.items()], ["metric", "value"])
    ctx.write_report(f"# {ctx.verb} {ctx.recipe}\n\n{table}\n![loss](loss.png)\n")
    eval_loss = f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else ""
    print(f"{cfg.model} ({cfg.method}): {result.steps} steps, final loss {result.final_loss:.4f}{eval_loss}, "
          f"{params['trainable_params']:,} trainable parameters")
