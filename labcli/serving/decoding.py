"""One decoding configuration per translation run: the one its evaluation used, read by everything that decodes.

A `lab finetune newari` run's headline scores (summary.json: bleu, chrf++, ter) come from decoding the
test set with the run's settings (greedy when it scored greedy, max_target_len new tokens,
no_repeat_ngram_size, the target-language token, the causal prompt). Every place that shows or serves
the run's model decodes the same way, from this one dict: the Streamlit app, the exported Space,
TorchServe's text handler and the ONNX bundle that Triton and `lab serve onnx` use.

It is RUN/decoding.json when the run wrote one; else it is derived from the run's config.yaml with the
Translator the evaluation itself used (labcli.models.translation), so the two cannot drift apart. A
model folder or preset that is not such a run decodes greedily with its own generation_config.

    {"task", "num_beams", "scores": summary key of the scores it reproduces ("greedy", "beam4") or None,
     "prompt": causal-lm prompt with {en} or None, "max_source_len": source truncation or None,
     "src_lang": the source language code the tokenizer is set to (mBART-50) or None,
     "generate": keyword arguments of model.generate (JSON: ints, bools, None), "source": where it came from}
"""

from __future__ import annotations

import json
from pathlib import Path

from labcli.errors import UserError

FILE = "decoding.json"
DEFAULT_MAX_NEW_TOKENS = 32


def for_source(source, max_new_tokens: int = 0) -> dict:
    """The decoding of a labcli.serving.source.Source: its run's, or plain greedy for a model folder or preset."""
    return of_run(source.run_dir, source.task, max_new_tokens=max_new_tokens)


def plain(task: str, max_new_tokens: int = 0) -> dict:
    """Greedy decoding with the model's own generation_config (a model that is not a translation run)."""
    new = max_new_tokens or DEFAULT_MAX_NEW_TOKENS
    return {"task": task, "num_beams": 1, "scores": None, "prompt": None, "max_source_len": None,
            "generate": {"num_beams": 1, "do_sample": False, "max_new_tokens": new}, "source": "the model's generation_config"}


def of_run(run_dir: Path | None, task: str, tokenizer=None, max_new_tokens: int = 0) -> dict:
    """The run's decoding (see the module docstring); `max_new_tokens` > 0 overrides its length limit."""
    out = None
    if run_dir is not None and (Path(run_dir) / FILE).is_file():
        try:
            out = {**json.loads((Path(run_dir) / FILE).read_text(encoding="utf-8")), "source": str(Path(run_dir) / FILE)}
        except json.JSONDecodeError:
            raise UserError(f"{Path(run_dir) / FILE} is not valid JSON", "re-run the training, or delete the file") from None
    elif run_dir is not None and (Path(run_dir) / "config.yaml").is_file() and (Path(run_dir) / "model").is_dir():
        out = from_config(Path(run_dir), task, tokenizer)
    if out is None:
        return plain(task, max_new_tokens)
    if max_new_tokens:
        out["generate"] = {**out["generate"], "max_new_tokens": max_new_tokens}
        out["scores"] = None  # a different length limit: the run's scores do not describe it
    return out


def from_config(run_dir: Path, task: str, tokenizer=None) -> dict | None:
    """The evaluation's own decoding, rebuilt from config.yaml with its Translator (None: not a translation run)."""
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    if "max_target_len" not in cfg:
        return None
    beams = (cfg.get("eval") or {}).get("beams") or [1]
    num_beams = 1 if 1 in beams else int(beams[0])  # the headline scores are greedy when greedy was scored
    translator = translator_from_config(cfg, task, tokenizer or load_tokenizer(run_dir / "model"))
    return {"task": task, "num_beams": num_beams, "scores": "greedy" if num_beams == 1 else f"beam{num_beams}",
            "prompt": cfg.get("prompt") if task == "causal-lm" else None,
            "max_source_len": cfg.get("max_source_len", 64) if task == "seq2seq" else None,
            "src_lang": cfg.get("src_lang") if task == "seq2seq" else None,
            "generate": jsonable(translator.generation_kwargs(num_beams)), "source": str(run_dir / "config.yaml")}


def translator_from_config(cfg: dict, task: str, tokenizer):
    """The Translator a newari run's evaluation used, from its config.yaml."""
    from labcli.models.translation import Translator

    return Translator(tokenizer, task, cfg.get("prompt", "{en}"), cfg.get("max_source_len", 64), cfg.get("max_target_len", 64),
                      cfg.get("src_lang"), cfg.get("tgt_lang"), (cfg.get("eval") or {}).get("no_repeat_ngram_size", 0))


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def jsonable(kwargs: dict) -> dict:
    return {k: (int(v) if hasattr(v, "item") else v) for k, v in kwargs.items()}


def encode(tokenizer, texts: list[str], decoding: dict, return_tensors: str = "pt") -> dict:
    """Tokenize sources as the evaluation did: seq2seq truncated at max_source_len, causal through the prompt."""
    prepare(tokenizer, decoding)
    if decoding.get("prompt"):
        return tokenizer([decoding["prompt"].format(en=t) for t in texts], return_tensors=return_tensors, padding=True,
                         add_special_tokens=False)
    limit = decoding.get("max_source_len")
    return tokenizer(texts, return_tensors=return_tensors, padding=True, truncation=bool(limit), max_length=limit)


def generate(model, tokenizer, texts: list[str], decoding: dict, use_cache: bool = True) -> list[str]:
    """Translations of `texts`, one at a time (no padding effects), with transformers' generate and this decoding.

    use_cache=False recomputes the whole prefix every step, as the exported ONNX graphs (no KV cache) do."""
    import torch

    out = []
    for text in texts:
        enc = encode(tokenizer, [text], decoding)
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            ids = model.generate(**enc, **decoding["generate"], use_cache=use_cache)[0]
        if not model.config.is_encoder_decoder:
            ids = ids[enc["input_ids"].shape[1]:]
        out.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return out


def prepare(tokenizer, decoding: dict) -> None:
    """Set what the evaluation's Translator set on the tokenizer: the source language code (mBART-50)."""
    if decoding.get("src_lang") and hasattr(tokenizer, "src_lang") and tokenizer.src_lang != decoding["src_lang"]:
        tokenizer.src_lang = decoding["src_lang"]


def describe(decoding: dict) -> str:
    """One line for reports and the apps."""
    g = decoding["generate"]
    parts = ["greedy" if decoding["num_beams"] == 1 else f"beam search ({decoding['num_beams']} beams)",
             f"at most {g.get('max_new_tokens')} new tokens"]
    if g.get("no_repeat_ngram_size"):
        parts.append(f"no repeated {g['no_repeat_ngram_size']}-grams")
    return ", ".join(parts)


def scores(summary: dict, decoding: dict) -> tuple[dict, int | None]:
    """({BLEU, chrF++, TER}, sentences) of the run's test scores for this decoding; None values when it has none."""
    key = decoding.get("scores")
    overall = ((summary.get("scores") or {}).get(key) or {}).get("by_domain", {}).get("all") if key else None
    if overall is None:
        return {"BLEU": None, "chrF++": None, "TER": None}, None
    return {"BLEU": overall.get("bleu"), "chrF++": overall.get("chrf++"), "TER": overall.get("ter")}, overall.get("n")


def card(summary: dict, decoding: dict, run_name: str) -> dict:
    """What the translation apps show about the run (newari_page.page's `card`)."""
    shown, n = scores(summary, decoding)
    note = (f"Test scores of this run ({n} sentences, {describe(decoding)}: how this page decodes). The references are "
            "silver data (partly machine-translated): compare runs, don't over-read." if n else
            f"No test scores for this decoding ({describe(decoding)}).")
    return {"caption": f"run {run_name} · model {summary.get('model')} · method {summary.get('method')}",
            "scores": shown, "scores_note": note}
