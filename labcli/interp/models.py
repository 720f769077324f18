"""A run's model as a TransformerLens bridge: the interp tools on any `lab` run with a `model/` folder."""

from __future__ import annotations

from pathlib import Path

from labcli.errors import UserError


def model_folder(run: str | Path) -> Path:
    """RUN/model (what finetune runs save), or RUN itself when it is a save_pretrained folder."""
    run = Path(run).expanduser()
    for folder in (run / "model", run):
        if (folder / "config.json").exists():
            return folder
    raise UserError(f"{run} has no model to analyse (no model/config.json)",
                    "pass a finished run folder that saved its model, e.g. one of `lab finetune tiny-lm`")


def load_run_model(run: str | Path):
    """(TransformerBridge over the run's causal LM in eval mode, its tokenizer)."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder(run)
    try:
        hf = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    except ValueError as exc:
        raise UserError(f"{folder} is not a causal LM: {str(exc).splitlines()[0]}",
                        "the interp tools read decoder-only language models") from None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=hf, tokenizer=tokenizer)
    bridge.eval()
    return bridge, tokenizer
