"""Causal-LM finetuning on plain text: the engine's smallest end-to-end recipe."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.models.peft_prep import LoraSettings, Method
from labcli.runs import Run

RESUMABLE = True  # --resume continues from the newest checkpoint
MULTI_PROCESS = True  # --nproc N runs it under torch.distributed.run


class Config(RecipeConfig):
    model: str = Field("tiny-gpt2", description="tiny-gpt2, tiny-llama, a local folder, or a hub id")
    method: Method = Field("full", description="full, lora or qlora")
    lora: LoraSettings = LoraSettings()
    data: str | None = Field(None, description="A UTF-8 text file, one document per line (default: shipped Newari corpus)")
    block_size: int = Field(64, ge=8, description="Tokens per training block")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size for tiny-* presets")
    dropout: float = Field(0.0, ge=0, le=1, description="Dropout of tiny-* presets")
    eval_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of blocks held out for eval loss")
    train: TrainConfig = TrainConfig()


def read_texts(data: str | None) -> list[str]:
    if data is None:
        from labcli.models.tokenizer import default_corpus

        return default_corpus()
    path = Path(data)
    if not path.is_file():
        raise UserError(f"data file not found: {path}", "pass data=FILE (UTF-8 text, one document per line)")
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text", "re-save it as UTF-8") from None


def prepare(cfg: Config):
    """(loaded model, model ready for cfg.method, parameter report, train blocks, eval blocks)."""
    from labcli.data.text import lm_blocks
    from labcli.models import load_model, prepare_for_method

    texts = read_texts(cfg.data)
    loaded = load_model(cfg.model, "causal-lm", quantize_4bit=cfg.method == "qlora", tokenizer_texts=lambda: texts,
                        vocab_size=cfg.vocab_size, dropout=cfg.dropout, seed=cfg.seed)
    model, params = prepare_for_method(loaded.model, cfg.method, cfg.lora, "causal-lm", seed=cfg.seed)
    blocks = lm_blocks(texts, loaded.tokenizer, cfg.block_size)
    n_eval = max(1, int(len(blocks) * cfg.eval_fraction))
    return loaded, model, params, blocks[n_eval:], blocks[:n_eval]


def run(cfg: Config, ctx: Run) -> None:
    from labcli.data.text import collate_lm
    from labcli.engine.export import save_final_model
    from labcli.engine.trainer import train
    from labcli.eval import plots

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
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items())
    ctx.write_report(f"# {ctx.verb} {ctx.recipe}\n\n| metric | value |\n|---|---|\n{rows}\n\n![loss](loss.png)\n")
