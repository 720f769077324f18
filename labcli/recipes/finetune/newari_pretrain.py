"""`lab finetune newari-pretrain`: mBART-style denoising pretraining of the tiny base (tiny-mbart-pretrained).

Stage one of the two mBART stages (Liu et al. 2020): reconstruct English and Newari text from
a noised copy (sentences permuted, 35 % of the words masked in Poisson(3.5) spans), with a
language-id token starting the output. `lab finetune newari model=tiny-mbart-pretrained` builds
this run once (cached under LAB_HOME, keyed by config, data and seed) and then finetunes it, so
`--method qlora` quantizes a trained base. Noise and data: labcli/data/newari/denoising.py and
labcli/data/newari/monolingual.py.
"""

from __future__ import annotations

import hashlib

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.data.newari import LEXICON_DOMAINS, RESOURCE_DOMAINS
from labcli.data.newari.monolingual import EXTRA_ENGLISH, ExtraEnglish
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError
from labcli.runs import Run

RESUMABLE = True  # --resume continues from the newest checkpoint


class NoiseConfig(Section):
    mask_ratio: float = Field(0.35, ge=0, lt=1, description="Share of words masked (mBART: 0.35)")
    poisson_lambda: float = Field(3.5, gt=0, description="Mean masked span length, Poisson (mBART: 3.5)")
    permute_sentences: bool = Field(True, description="Shuffle the sentences of each instance")


class Config(RecipeConfig):
    model: str = Field("tiny-mbart", description="The architecture preset to pretrain (random init, seeded)")
    preset: dict = Field({}, description="Config overrides for the preset (e.g. d_model)")
    vocab_size: int = Field(4000, ge=100, description="Tokenizer size (trained on the training pairs' both sides)")
    dropout: float = Field(0.1, ge=0, le=1, description="Dropout of the preset")
    data: str | None = Field(None, description="Parallel data whose TRAIN split gives the text (as `lab finetune newari --data`)")
    lexicon_domains: list[str] = Field(list(LEXICON_DOMAINS), description="Word-list domains (see labcli.data.newari.task_splits)")
    resource_domains: list[str] = Field(list(RESOURCE_DOMAINS), description="Domains used for training only, all splits")
    extra_english: list[ExtraEnglish] = Field(list(EXTRA_ENGLISH), description="Other shipped English text (train splits)")
    newari_share: float = Field(0.5, gt=0, lt=1, description="Share of draws that are Newari (the rest English)")
    max_words: int = Field(32, ge=1, description="Words per instance (consecutive sentences packed together)")
    max_len: int = Field(64, ge=8, description="Token limit of encoder input and decoder output")
    noise: NoiseConfig = NoiseConfig()
    dev_instances: int = Field(256, ge=1, description="Noised held-out (dev) instances for the eval loss")
    data_digest: str | None = Field(None, description="Expected corpus hash (set by `lab finetune newari`, so its "
                                                      "cache key includes the data); the run stops if it differs")
    train: TrainConfig = TrainConfig()


def check(cfg: Config) -> list[str]:
    from labcli.models.presets import PRESETS

    if PRESETS.get(cfg.model, ("",))[0] != "seq2seq" or cfg.model.endswith("-pretrained"):
        return [f"model: '{cfg.model}' is not a seq2seq architecture preset (hint: use tiny-mbart)"]
    return []


def plan(cfg: Config) -> str:
    t = cfg.train
    return (f"denoising-pretrain {cfg.model} for {t.max_steps} steps of {t.batch_size} instances "
            f"({cfg.newari_share:.0%} Newari), lr {t.lr}")


def build_corpus(cfg: Config):
    """(training pairs, {"en": texts, "new": texts} from them, dev texts, digest of the inputs)."""
    from labcli.data.newari import load_pairs, task_splits
    from labcli.data.newari.monolingual import corpus, inputs_digest

    pairs = load_pairs(cfg.data)
    splits = task_splits(pairs, cfg.lexicon_domains, cfg.resource_domains)
    texts = corpus(splits.train, cfg.extra_english)
    dev = {"en": [p.en for p in splits.dev], "new": [p.new for p in splits.dev]}
    return splits.train, texts, dev, inputs_digest(pairs)


def run(cfg: Config, ctx: Run) -> None:
    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    from labcli.data.newari.denoising import (
        LANG_TOKENS,
        SPECIAL_TOKENS,
        DenoisingSet,
        NoiseSettings,
        example,
        instances,
    )
    from labcli.engine.distributed import pick_device
    from labcli.engine.export import save_final_model
    from labcli.engine.trainer import evaluate, train
    from labcli.models import load_model
    from labcli.models.translation import Translator

    train_pairs, texts, dev_texts, digest = build_corpus(cfg)
    if cfg.data_digest and cfg.data_digest != digest:
        raise UserError(f"the corpus hash is {digest}, not the expected {cfg.data_digest}",
                        "the data changed between the cache key and the run: rerun `lab finetune newari`")
    loaded = load_model(cfg.model, "seq2seq", vocab_size=cfg.vocab_size, extra_specials=SPECIAL_TOKENS,
                        tokenizer_texts=lambda: [p.en for p in train_pairs] + [p.new for p in train_pairs],
                        preset_overrides=cfg.preset, dropout=cfg.dropout, seed=cfg.seed)
    tok = loaded.tokenizer
    collate = Translator(tok, "seq2seq", "", cfg.max_len, cfg.max_len).collate
    lang_ids = {lang: tok.convert_tokens_to_ids(t) for lang, t in LANG_TOKENS.items()}

    def encode(noised: str, original: str, lang: str) -> dict:
        return example(tok, noised, original, lang_ids[lang], cfg.max_len)

    settings = NoiseSettings(cfg.noise.mask_ratio, cfg.noise.poisson_lambda, cfg.noise.permute_sentences)
    shares = {"new": cfg.newari_share, "en": 1 - cfg.newari_share}
    packed = {lang: instances(t, cfg.max_words) for lang, t in texts.items()}
    train_set = DenoisingSet(packed, shares, cfg.train.max_steps * cfg.train.batch_size, cfg.seed, encode, settings)
    dev_packed = {lang: instances(t, cfg.max_words) for lang, t in dev_texts.items()}
    dev_set = DenoisingSet(dev_packed, {"new": 0.5, "en": 0.5}, cfg.dev_instances, cfg.seed + 1, encode, settings)
    dev_examples = [dev_set[i] for i in range(len(dev_set))]
    initial = None
    if ctx.resume_from is None:
        device = pick_device(cfg.device)
        initial = evaluate(loaded.model.to(device), dev_examples, collate, cfg.train, device)
    result = train(loaded.model, train_set, collate, cfg.train, ctx, seed=cfg.seed, eval_set=dev_examples)
    result.model.generation_config.forced_bos_token_id = None  # bilingual: the caller picks <lang>
    save_final_model(result.model, tok, "full", ctx.path("model"))
    if not ctx.is_main:
        return
    weights = ctx.path("model") / "model.safetensors"
    corpus_stats = {lang: {"texts": len(texts[lang]), "words": sum(len(t.split()) for t in texts[lang]),
                           "instances": len(packed[lang])} for lang in texts}
    samples = reconstruct_samples(result.model, tok, dev_set, lang_ids, cfg.max_len)
    summary = {"task": "seq2seq", "model": "tiny-mbart-pretrained", "architecture": cfg.model,
               "steps": result.steps, "final_loss": result.final_loss, "initial_eval_loss": initial,
               "eval_loss": result.eval_loss, "tokens": result.tokens, "wall_s": round(result.wall_s, 1),
               "tokens_per_s": round(result.tokens / max(result.wall_s, 1e-9), 1),
               "corpus": corpus_stats, "shares": shares, "extra_english": list(cfg.extra_english),
               "data_digest": digest, "model_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
               "samples": samples}
    ctx.write_summary(summary)
    write_report(ctx, cfg, summary)
    initial_text = f"{initial:.3f} -> " if initial is not None else ""
    print(f"tiny-mbart-pretrained: {result.steps} denoising steps on {corpus_stats['en']['instances']:,} English + "
          f"{corpus_stats['new']['instances']:,} Newari instances; dev denoising loss {initial_text}"
          f"{result.eval_loss:.3f}; {summary['wall_s']} s")


def reconstruct_samples(model, tok, dev_set, lang_ids: dict, max_len: int, n: int = 4) -> list[dict]:
    """A few dev instances: the noised input and the model's greedy reconstruction (for the report)."""
    import torch

    out = []
    model.eval()
    for k in range(min(n, len(dev_set))):
        lang, text, noised = dev_set.draw(k)
        enc = tok(noised, return_tensors="pt", truncation=True, max_length=max_len)
        with torch.no_grad():
            ids = model.generate(**{k2: v.to(model.device) for k2, v in enc.items() if k2 != "token_type_ids"},
                                 forced_bos_token_id=lang_ids[lang], max_new_tokens=max_len, num_beams=1, do_sample=False)
        out.append({"lang": lang, "original": text, "noised": noised,
                    "reconstruction": tok.decode(ids[0], skip_special_tokens=True).strip()})
    return out


def write_report(ctx: Run, cfg: Config, summary: dict) -> None:
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table

    plots.curves(ctx.metrics(), ["loss", "eval_loss"], ctx.path("loss.png"), "denoising pretraining")
    corpus = markdown_table([[lang, s["texts"], s["words"], s["instances"], summary["shares"][lang]]
                             for lang, s in summary["corpus"].items()],
                            ["language", "texts", "words", "instances", "share of draws"])
    samples = markdown_table([[s["lang"], s["original"], s["noised"], s["reconstruction"]] for s in summary["samples"]],
                             ["lang", "original (dev)", "noised input", "greedy reconstruction"])
    ctx.write_report(
        f"# lab finetune newari-pretrain ({cfg.model})\n\n"
        f"mBART-style denoising: sentence permutation, {cfg.noise.mask_ratio:.0%} of words masked in "
        f"Poisson({cfg.noise.poisson_lambda}) spans (one <mask> per span), language token first in the output. "
        f"Text: the training split of the parallel data (both sides), plus English from "
        f"{', '.join(cfg.extra_english) or 'nothing else'}; held-out pairs are not used.\n\n{corpus}\n\n"
        f"{summary['steps']} steps of {cfg.train.batch_size} instances; dev denoising loss "
        f"{summary['initial_eval_loss']} (random init) -> {summary['eval_loss']:.4f}; final train loss "
        f"{summary['final_loss']:.4f}; {summary['wall_s']} s, {summary['tokens_per_s']} tokens/s.\n\n"
        f"![loss](loss.png)\n\n## Reconstructions (dev)\n\n{samples}\n")
