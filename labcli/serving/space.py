"""`lab export space --run DIR OUT`: a folder ready to push to a Hugging Face Space (Streamlit SDK)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from labcli import runs
from labcli.errors import UserError
from labcli.serving.apps import SPACE
from labcli.serving.source import translation_run

README = """---
title: English to Newari ({method})
emoji: 🗣️
colorFrom: indigo
colorTo: yellow
sdk: streamlit
sdk_version: "{streamlit}"
app_file: app.py
pinned: false
license: other
---

# English → Newari ({model}, {method})

Exported by `lab export space` from run `{run}`. Test scores on the shipped corpus: BLEU {bleu},
chrF++ {chrf}, TER {ter}. The references are silver data (partly machine-translated), so compare
runs with these numbers rather than read them as human-reference quality.

`model/` holds the merged model (LoRA/QLoRA adapters merged into a full-precision base). Data licences: see the lab package's labcli/data/newari/README.md
(GATITOS CC-BY-4.0, MediaWiki GPL-2.0-or-later, loveucifer MIT as stated upstream).
"""


def export_space(run_dir: Path, out: Path) -> Path:
    """Copy the merged model, a self-contained Streamlit app, requirements and a Spaces README."""
    import importlib.metadata as md

    import yaml

    run_dir = translation_run(str(run_dir))
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty", "pass a new folder")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    card = {k: summary.get(k) for k in ("task", "model", "method", "bleu", "chrf++", "ter")}
    card["prompt"] = cfg.get("prompt")
    versions = {n: md.version(n) for n in ("torch", "transformers", "streamlit", "tokenizers", "safetensors")}

    def write(folder: Path) -> None:
        shutil.copytree(run_dir / "model", folder / "model")
        shutil.copyfile(SPACE, folder / "app.py")
        (folder / "run_summary.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
        (folder / "requirements.txt").write_text("".join(f"{n}>={v.split('+')[0]}\n" for n, v in versions.items()
                                                         if n != "streamlit"), encoding="utf-8")
        (folder / "README.md").write_text(README.format(
            method=summary.get("method"), model=summary.get("model"), run=run_dir.name, bleu=summary.get("bleu"),
            chrf=summary.get("chrf++"), ter=summary.get("ter"), streamlit=versions["streamlit"]), encoding="utf-8")

    return runs.replace_dir(out, write)
