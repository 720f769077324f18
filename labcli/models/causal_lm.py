"""Causal-LM finetuning set-up shared by the recipes that train one on plain text
(`finetune tiny-lm`, `profile train`): the config keys, the texts, the model ready for its method,
and the token blocks."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig, read_user_text
from labcli.engine.trainer import TrainConfig, builds_on_meta
from labcli.errors import UserError
from labcli.models.peft_prep import LoraSettings, Method

Attention = Literal["sdpa", "eager", "lab-flash"]
Kernels = Literal["none", "lab-nf4"]


class CausalLMConfig(RecipeConfig):
    model: str = Field("tiny-gpt2", description="tiny-gpt2, tiny-llama, a local folder, or a hub id")
    method: Method = Field("full", description="full, lora or qlora")
    attention: Attention = Field("sdpa", description="sdpa, eager, or lab-flash (lab's Triton FlashAttention-2; "
                                                     "interpreted, slowly, without a GPU)")
    kernels: Kernels = Field("none", description="none, or lab-nf4: with --method qlora, the 4-bit layers run "
                                                 "lab's Triton NF4 kernels instead of bitsandbytes'")
    lora: LoraSettings = LoraSettings()
    data: str | None = Field(None, description="A UTF-8 text file, one document per line (default: shipped Newari corpus)")
    block_size: int = Field(64, ge=8, description="Tokens per training block")
    vocab_size: int = Field(2000, ge=100, description="Tokenizer size for tiny-* presets")
    dropout: float = Field(0.0, ge=0, le=1, description="Dropout of tiny-* presets")
    eval_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of blocks held out for eval loss")
    train: TrainConfig = TrainConfig()


def read_texts(data: str | None) -> list[str]:
    """The lines of a UTF-8 text file (one document per line), or the shipped corpus."""
    if data is None:
        from labcli.models.tokenizer import default_corpus

        return default_corpus()
    path = Path(data)
    if not path.is_file():
        raise UserError(f"data file not found: {path}", "pass data=FILE (UTF-8 text, one document per line)")
    return [line for line in read_user_text(path, "re-save it as UTF-8").split("\n") if line.strip()]


def prepare(cfg: CausalLMConfig):
    """(loaded model, model ready for cfg.method, parameter report, train blocks, eval blocks)."""
    from labcli.data.text import lm_blocks
    from labcli.models import load_model, prepare_for_method

    texts = read_texts(cfg.data)
    loaded = load_model(cfg.model, "causal-lm", quantize_4bit=cfg.method == "qlora", tokenizer_texts=lambda: texts,
                        vocab_size=cfg.vocab_size, dropout=cfg.dropout, seed=cfg.seed, attention=cfg.attention,
                        kernels=cfg.kernels, meta=builds_on_meta(cfg.train))
    model, params = prepare_for_method(loaded.model, cfg.method, cfg.lora, "causal-lm", seed=cfg.seed)
    blocks = lm_blocks(texts, loaded.tokenizer, cfg.block_size)
    n_eval = max(1, int(len(blocks) * cfg.eval_fraction))
    return loaded, model, params, blocks[n_eval:], blocks[:n_eval]
