"""Which model to serve: a run folder (`--run DIR`) or a model folder/preset (`--model NAME`).

A training run folder holds `model/` (a Hugging Face `save_pretrained` folder, LoRA/QLoRA
adapters already merged into a dequantized base) and `summary.json` with at least `task`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from labcli.errors import UserError

TASKS = ("seq2seq", "causal-lm")


@dataclass(frozen=True)
class Source:
    """A servable model: its Hugging Face folder, its task, and a short name for endpoints."""

    model_dir: Path
    task: str
    name: str


def resolve(run: str = "", model: str = "") -> Source:
    """Turn `--run DIR` or `--model NAME|PATH` into a Source, with one-line errors."""
    if bool(run) == bool(model):
        raise UserError("give exactly one of --run DIR or --model NAME",
                        "e.g. `lab serve triton --run runs/finetune-newari-...` or --model tiny-seq2seq")
    if run:
        folder = Path(run).expanduser()
        if not folder.is_dir():
            raise UserError(f"run folder not found: {folder}", "pass a folder made by `lab finetune ...`")
        if not (folder / "model" / "config.json").is_file():
            raise UserError(f"{folder} has no model/ folder with config.json",
                            "serve a finished training run (it saves RUN/model/), or pass --model PATH")
        return Source(folder / "model", read_task(folder / "summary.json", folder / "model"), slug(folder.name))
    if model.startswith("tiny-"):
        return preset(model)
    folder = Path(model).expanduser()
    if folder.is_dir() and (folder / "model" / "config.json").is_file():
        return resolve(run=str(folder))
    if not (folder / "config.json").is_file():
        raise UserError(f"--model {model}: not a model folder (no config.json) and not a preset",
                        "pass a save_pretrained folder or a tiny-* preset (tiny-mbart, tiny-gpt2, ...)")
    return Source(folder, read_task(folder.parent / "summary.json", folder), slug(folder.name))


def preset(name: str) -> Source:
    """A `tiny-*` preset from labcli.models (random weights at a fixed seed, built once and cached)."""
    from labcli.models import presets
    from labcli.models.loader import load_model

    if name not in presets.PRESETS:
        raise UserError(f"unknown preset '{name}'", f"presets: {', '.join(presets.PRESETS)}")
    task = presets.PRESETS[name][0]
    loaded = load_model(name, task)
    return Source(Path(loaded.source), task, slug(name))


def read_task(summary: Path, model_dir: Path) -> str:
    """The task from summary.json, else guessed from config.json (encoder-decoder or not)."""
    if summary.is_file():
        try:
            task = json.loads(summary.read_text(encoding="utf-8")).get("task")
        except json.JSONDecodeError:
            raise UserError(f"{summary} is not valid JSON", "re-run the training, or fix the file") from None
        if task in TASKS:
            return task
        if task is not None:
            raise UserError(f"{summary}: task '{task}' cannot be served", f"servable tasks: {', '.join(TASKS)}")
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return "seq2seq" if config.get("is_encoder_decoder") else "causal-lm"


def slug(text: str) -> str:
    """A Triton/TorchServe-safe model name: letters, digits and underscores."""
    out = "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")
    return (out or "model")[:48]


def translation_run(folder: str | None) -> Path:
    """A finished `lab finetune newari` run folder (what the Streamlit app and the Spaces export need), or one line why not."""
    if not folder:
        raise UserError("no run given", "pass --run DIR (a finished `lab finetune newari` run)")
    path = Path(folder).expanduser()
    for need in ("model/config.json", "summary.json", "config.yaml"):
        if not (path / need).exists():
            raise UserError(f"{path} has no {need}", "pass a finished `lab finetune newari` run folder")
    return path


def load_translator(run_dir: Path):
    """(Translator, model, summary) of a newari run, decoding as the run's config says (the Streamlit app's model)."""
    import yaml

    from labcli.models import load_model
    from labcli.models.translation import Translator

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    loaded = load_model(str(run_dir / "model"), summary.get("task", "seq2seq"))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    translator = Translator(loaded.tokenizer, loaded.task, cfg.get("prompt", "{en}"), cfg.get("max_source_len", 64),
                            cfg.get("max_target_len", 64), cfg.get("src_lang"), cfg.get("tgt_lang"),
                            (cfg.get("eval") or {}).get("no_repeat_ngram_size", 0))
    return translator, loaded.model.eval(), summary
