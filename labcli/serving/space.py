"""`lab export space --run DIR OUT`: a folder ready to push to a Hugging Face Space (Streamlit SDK)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from labcli import runs
from labcli.errors import UserError
from labcli.serving.apps import FONTS, PAGE, SPACE
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

Exported by `lab export space` from run `{run}`. Test scores on the shipped corpus ({n} sentences,
{decoding}): BLEU {bleu}, chrF++ {chrf}, TER {ter}. The app decodes exactly that way (`decoding.json`:
the run's tokenization and generate arguments). The references are silver data (partly
machine-translated), so compare runs with these numbers rather than read them as human-reference quality.

Newari text is drawn with Noto Sans Devanagari (`fonts/`, SIL Open Font License 1.1), embedded in the page.
Push this folder with `hf upload USER/SPACE . --repo-type space` (huggingface_hub's `hf` command).

`model/` holds the merged model (LoRA/QLoRA adapters merged into a full-precision base). Data licences: see the lab package's labcli/data/newari/README.md
(GATITOS CC-BY-4.0, MediaWiki GPL-2.0-or-later, loveucifer MIT as stated upstream).
"""


def export_space(run_dir: Path, out: Path) -> Path:
    """Copy the merged model, a self-contained Streamlit app (page, font, the run's decoding), requirements and a README."""
    import importlib.metadata as md

    from labcli.serving import decoding

    run_dir = translation_run(str(run_dir))
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty", "pass a new folder")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    how = decoding.of_run(run_dir, summary.get("task", "seq2seq"))
    card = {k: summary.get(k) for k in ("task", "model", "method", "bleu", "chrf++", "ter")}
    card["page"] = decoding.card(summary, how, run_dir.name)
    shown, n = decoding.scores(summary, how)
    versions = {n: md.version(n) for n in ("torch", "transformers", "streamlit", "tokenizers", "safetensors")}

    def write(folder: Path) -> None:
        shutil.copytree(run_dir / "model", folder / "model")
        shutil.copyfile(SPACE, folder / "app.py")
        shutil.copyfile(PAGE, folder / "newari_page.py")
        shutil.copytree(FONTS, folder / "fonts")
        (folder / "decoding.json").write_text(json.dumps({k: v for k, v in how.items() if k != "source"}, indent=2,
                                                         ensure_ascii=False), encoding="utf-8")
        (folder / "run_summary.json").write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
        (folder / "requirements.txt").write_text("".join(f"{n}>={v.split('+')[0]}\n" for n, v in versions.items()
                                                         if n != "streamlit"), encoding="utf-8")
        (folder / "README.md").write_text(README.format(
            method=summary.get("method"), model=summary.get("model"), run=run_dir.name, bleu=shown["BLEU"],
            chrf=shown["chrF++"], ter=shown["TER"], n=n, decoding=decoding.describe(how), streamlit=versions["streamlit"]),
            encoding="utf-8")

    return runs.replace_dir(out, write)
