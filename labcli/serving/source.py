"""Which model to serve: a run folder (`--run DIR`) or a model folder/preset (`--model NAME`).

A training run folder holds `model/` (a Hugging Face `save_pretrained` folder, LoRA/QLoRA
adapters already merged into a dequantized base) and `summary.json` with at least `task`.
With neither, the serve recipes use a small default run, built once with the commands below and
cached under LAB_HOME (labcli.runs.prerequisite), so their example commands run on a fresh clone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from labcli import runs
from labcli.errors import UserError

TASKS = ("seq2seq", "causal-lm")

# `lab finetune newari` sized to be served soon, not to translate well: the random-init tiny mBART (no
# pretraining stage to build first), 200 steps, scored on 100 test sentences: under two minutes on a laptop CPU.
DEFAULT_TRANSLATION_RUN = ["--method", "full", "model=tiny-mbart", "tgt_lang=null", "train.max_steps=200", "train.eval_every=0", "train.save_every=0",
                           "train.tensorboard=false", "eval.beams=[1]", "eval.baseline=false", "eval.max_examples=100"]
# `lab detect deepfake-image` (cheaper than deepfake-voice, which needs the audio packages), just as small.
DEFAULT_DETECTOR_RUN = ["patches_per_photo=8", "ae_epochs=2", "cnn_epochs=1", "test_photos=[gravel,lfw-faces]"]


def default_translation_run() -> Path:
    """The small `lab finetune newari` run served when no --run is given (built once, then cached)."""
    return runs.prerequisite("finetune", "newari", DEFAULT_TRANSLATION_RUN, "no --run given: serving the default newari run")


def default_detector_run() -> Path:
    """The small `lab detect deepfake-image` run served when no --run is given (built once, then cached)."""
    return runs.prerequisite("detect", "deepfake-image", DEFAULT_DETECTOR_RUN, "no --run given: serving the default deepfake-image run")


def plan(what: str, run: str = "", model: str = "", detector: bool = False) -> str:
    """For `lab check`: what will be served; with neither --run nor --model, the default run and how it is built."""
    if run or model:
        return f"{what} {run or model}"
    verb, recipe, overrides = ("detect", "deepfake-image", DEFAULT_DETECTOR_RUN) if detector else \
        ("finetune", "newari", DEFAULT_TRANSLATION_RUN)
    return (f"{what} the default run (no --run given): `lab {verb} {recipe} {' '.join(overrides)}`, "
            "built once and cached under LAB_HOME")


@dataclass(frozen=True)
class Source:
    """A servable model: its Hugging Face folder, its task, a short name for endpoints, and its run (if any)."""

    model_dir: Path
    task: str
    name: str
    run_dir: Path | None = None  # the training run it comes from: its decoding configuration (decoding.py)


def resolve(run: str = "", model: str = "") -> Source:
    """Turn `--run DIR` or `--model NAME|PATH` (neither: the default run) into a Source, with one-line errors."""
    if run and model:
        raise UserError("give one of --run DIR or --model NAME, not both",
                        "e.g. `lab serve triton --run runs/finetune-newari-...` or --model tiny-mbart")
    if not run and not model:
        run = str(default_translation_run())
    if run:
        folder = Path(run).expanduser()
        if not folder.is_dir():
            raise UserError(f"run folder not found: {folder}", "pass a folder made by `lab finetune ...`")
        if not (folder / "model" / "config.json").is_file():
            raise UserError(f"{folder} has no model/ folder with config.json",
                            "serve a finished training run (it saves RUN/model/), or pass --model PATH")
        return Source(folder / "model", read_task(folder / "summary.json", folder / "model"), slug(folder.name), folder)
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
    """A finished `lab finetune newari` run folder (what the Streamlit app and the Spaces export need), or one line why not.

    None or "": the default run (built once, then cached)."""
    path = Path(folder).expanduser() if folder else default_translation_run()
    for need in ("model/config.json", "summary.json", "config.yaml"):
        if not (path / need).exists():
            raise UserError(f"{path} has no {need}", "pass a finished `lab finetune newari` run folder")
    return path


@dataclass
class RunTranslator:
    """A newari run's model with the decoding its evaluation used (the Streamlit app's model)."""

    model: object
    tokenizer: object
    summary: dict
    decoding: dict
    run_dir: Path

    def translate(self, text: str) -> str:
        from labcli.serving.decoding import generate

        return generate(self.model, self.tokenizer, [text], self.decoding)[0]

    def card(self) -> dict:
        from labcli.serving.decoding import card

        return card(self.summary, self.decoding, self.run_dir.name)


def load_translator(run_dir: Path) -> RunTranslator:
    """The run's model, decoding exactly as its evaluation did (labcli.serving.decoding)."""
    from labcli.models import load_model
    from labcli.serving import decoding

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    loaded = load_model(str(run_dir / "model"), summary.get("task", "seq2seq"))
    how = decoding.of_run(run_dir, loaded.task, loaded.tokenizer)  # its Translator also sets the tokenizer up (padding side)
    return RunTranslator(loaded.model.eval(), loaded.tokenizer, summary, how, run_dir)
