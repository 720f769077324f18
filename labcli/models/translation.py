"""Translation as a training task: encode pairs, collate, and decode, for seq2seq and causal LMs.

Seq2seq (mBART, T5): source -> encoder, target -> labels; mBART-50 gets language codes.
Lab's own tokenizers (tiny-* presets) get a target language token the same way: labels are
`<lang> target </s>` and generation forces `<lang>` first (the denoising-pretrained base,
labcli/data/newari/denoising.py, was trained with it).
Causal (BLOOMZ, Llama): `prompt + target + eos`, loss on the target tokens only (prompt = -100).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labcli.data.text import IGNORE, padded_collate


@dataclass
class Decoded:
    hyps: list[str]
    unks: list[int]  # <unk> tokens generated, per sentence
    stopped: list[bool]  # the model ended the output itself (EOS) before the length limit


class Translator:
    """Everything that differs between a seq2seq and a causal translation model."""

    def __init__(self, tokenizer, task: str, prompt: str, max_source_len: int, max_target_len: int,
                 src_lang: str | None = None, tgt_lang: str | None = None, no_repeat_ngram_size: int = 0):
        self.tok, self.task, self.prompt = tokenizer, task, prompt
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.max_src, self.max_tgt = max_source_len, max_target_len
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        if task == "seq2seq" and src_lang and hasattr(tokenizer, "src_lang"):
            tokenizer.src_lang, tokenizer.tgt_lang = src_lang, tgt_lang
        # A tokenizer without language-code handling (lab's own): put the target token in by hand.
        self.tgt_lang_id = None
        if task == "seq2seq" and tgt_lang and not hasattr(tokenizer, "tgt_lang"):
            self.tgt_lang_id = tokenizer.convert_tokens_to_ids(tgt_lang)
            if self.tgt_lang_id is None or self.tgt_lang_id == tokenizer.unk_token_id:
                from labcli.errors import UserError

                raise UserError(f"the tokenizer has no language token '{tgt_lang}'",
                                "use a model pretrained with it (tiny-mbart-pretrained), or set tgt_lang=null")
        if task == "causal-lm":
            tokenizer.padding_side = "left"  # generation continues from the right edge
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token

    def encode(self, en: str, new: str) -> dict:
        if self.task == "seq2seq" and self.tgt_lang_id is not None:
            source = self.tok(en, truncation=True, max_length=self.max_src)["input_ids"]
            target = self.tok(new, add_special_tokens=False)["input_ids"][: self.max_tgt - 2]
            return {"input_ids": source, "labels": [self.tgt_lang_id] + target + [self.tok.eos_token_id]}
        if self.task == "seq2seq":
            enc = self.tok(en, text_target=new, truncation=True, max_length=self.max_src)
            labels = enc["labels"][: self.max_tgt]
            return {"input_ids": enc["input_ids"], "labels": labels}
        prompt_ids = self.tok(self.prompt.format(en=en), add_special_tokens=False)["input_ids"][: self.max_src]
        target_ids = self.tok(new, add_special_tokens=False)["input_ids"][: self.max_tgt - 1] + [self.tok.eos_token_id]
        return {"input_ids": prompt_ids + target_ids, "labels": [IGNORE] * len(prompt_ids) + target_ids}

    def collate(self, examples: list[dict]) -> dict:
        """Right-padded batches for training, labels padded with IGNORE (data.text.padded_collate)."""
        return padded_collate(self.tok.pad_token_id)(examples)

    def generation_kwargs(self, num_beams: int, no_repeat_ngram_size: int | None = None) -> dict:
        nr = self.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size
        kwargs = {"num_beams": num_beams, "do_sample": False, "max_new_tokens": self.max_tgt,
                  "pad_token_id": self.tok.pad_token_id, "no_repeat_ngram_size": nr}
        if self.task == "seq2seq" and self.tgt_lang:  # mBART-50: the first target token is the language code
            kwargs["forced_bos_token_id"] = self.tok.convert_tokens_to_ids(self.tgt_lang)
        return kwargs

    def translate(self, model, sources: list[str], num_beams: int = 1, batch_size: int = 32) -> tuple[list[str], list[int]]:
        """Translations and, per sentence, how many <unk> tokens were generated."""
        out = self.decode(model, sources, num_beams, batch_size)
        return out.hyps, out.unks

    @torch.no_grad()
    def decode(self, model, sources: list[str], num_beams: int = 1, batch_size: int = 32,
               no_repeat_ngram_size: int | None = None) -> Decoded:
        """Translations, <unk> counts, and whether each output ended with EOS (not cut at max length).
        `no_repeat_ngram_size` overrides the translator's own for this call."""
        model.eval()
        device = next(model.parameters()).device
        from rich.progress import track

        hyps, unks, stopped = [], [], []
        eos = self.tok.eos_token_id
        starts = range(0, len(sources), batch_size)
        for lo in track(starts, description=f"translating ({num_beams} beam{'s' * (num_beams > 1)})",
                        transient=True, disable=len(starts) < 2):
            chunk = sources[lo:lo + batch_size]
            if self.task == "seq2seq":
                enc = self.tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=self.max_src)
            else:
                texts = [self.prompt.format(en=s) for s in chunk]
                enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            out = model.generate(**enc, **self.generation_kwargs(num_beams, no_repeat_ngram_size))
            if self.task == "causal-lm":
                out = out[:, enc["input_ids"].shape[1]:]
            unk = self.tok.unk_token_id
            unks += [int((row == unk).sum()) if unk is not None else 0 for row in out]
            hyps += [t.strip() for t in self.tok.batch_decode(out, skip_special_tokens=True)]
            # seq2seq output starts with the decoder start token (EOS for mBART): skip it. mBART's
            # config forces EOS as the last token at the length limit: only an earlier EOS counts.
            body = (out[:, 1:] if self.task == "seq2seq" else out)[:, : self.max_tgt - 1]
            stopped += [bool((row == eos).any()) for row in body]
        return Decoded(hyps, unks, stopped)
