"""Greedy decoding and raw logits over an exported ONNX bundle, with numpy + onnxruntime only.

This file is copied next to every served model (the Triton Python backend runs it in its own
numpy<2 environment), so it imports nothing from labcli, torch or transformers.

Bundle layout (written by labcli.serving.export): meta.json, tokenizer.json and either
encoder.onnx + decoder.onnx (seq2seq) or model.onnx (causal-lm). meta.json carries the run's decoding
(labcli/serving/decoding.py): max_new_tokens, no_repeat_ngram_size, the forced first/last tokens, the
causal prompt and the source length limit, so the served text equals the run's evaluation's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


class BadInput(ValueError):
    """A request the model cannot take (empty or oversized text, wrong tensors): a 4xx, not a crash."""


class OnnxGenerator:
    def __init__(self, folder: str | Path, threads: int | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.task = self.meta["task"]
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or int(os.environ.get("LAB_THREADS", "0")) or 1
        opts.inter_op_num_threads = 1

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]

        def session(name: str):
            return ort.InferenceSession(str(folder / name), opts, providers=providers)

        if self.task == "seq2seq":
            self.encoder, self.decoder = session("encoder.onnx"), session("decoder.onnx")
        else:
            self.model = session("model.onnx")
        eos = self.meta.get("eos_token_id")
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.pad = self.meta.get("pad_token_id") or 0

    # -- tensors in, tensors out -------------------------------------------------------------
    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray, decoder_input_ids: np.ndarray | None = None) -> np.ndarray:
        """Next-token logits [batch, 1, vocab] for int64 id tensors (the last position of the eager forward)."""
        check_ids(input_ids, "input_ids", self.meta["vocab_size"])
        if attention_mask.shape != input_ids.shape:
            raise BadInput(f"attention_mask shape {list(attention_mask.shape)} != input_ids shape {list(input_ids.shape)}")
        if self.task == "causal-lm":
            return self.model.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        if decoder_input_ids is None:
            raise BadInput("a seq2seq model needs decoder_input_ids")
        check_ids(decoder_input_ids, "decoder_input_ids", self.meta["vocab_size"])
        hidden = self.encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
        feed = {"decoder_input_ids": decoder_input_ids, "encoder_hidden_states": hidden, "attention_mask": attention_mask}
        return self.decoder.run(None, feed)[0]

    # -- text in, text out -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids as the run's evaluation made them; a source longer than the run translated is refused, not cut."""
        if not isinstance(text, str) or not text.strip():
            raise BadInput("empty text: send at least one word")
        limit = min(int(self.meta["max_input_tokens"]), int(self.meta.get("max_source_len") or 10**9))
        if len(text) > 16 * limit:
            raise BadInput(f"text of {len(text)} characters is too long (at most {16 * limit})")
        prompt = self.meta.get("prompt")
        ids = self.tokenizer.encode(prompt.format(en=text), add_special_tokens=False).ids if prompt else self.tokenizer.encode(text).ids
        if len(ids) > limit:
            raise BadInput(f"text is {len(ids)} tokens long; the limit is {limit}")
        return ids

    def generate(self, texts: list[str]) -> list[str]:
        """Greedy decoding, as `model.generate(do_sample=False, num_beams=1)` does it."""
        encoded = [self.encode(t) for t in texts]
        if self.task == "seq2seq":
            out = self.greedy_seq2seq(encoded)
        else:
            out = [self.greedy_causal(ids) for ids in encoded]
        return [self.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in out]

    def next_token(self, logits: np.ndarray, step: int, seqs: np.ndarray) -> np.ndarray:
        """argmax after transformers' no-repeat-n-gram ban, with the forced first/last tokens mBART-style configs set.

        seqs: [batch, length] ids so far, as generate's logits processors see them (the decoder ids with the
        start token for seq2seq; prompt and generated ids for causal LMs)."""
        forced_bos, forced_eos = self.meta.get("forced_bos_token_id"), self.meta.get("forced_eos_token_id")
        n = int(self.meta.get("no_repeat_ngram_size") or 0)
        if n and seqs.shape[1] + 1 >= n:
            logits = logits.copy()
            for row, seq in enumerate(seqs.tolist()):
                prefix = tuple(seq[len(seq) - n + 1:]) if n > 1 else ()
                banned = {seq[i + n - 1] for i in range(len(seq) - n + 1) if tuple(seq[i:i + n - 1]) == prefix}
                logits[row, list(banned)] = -np.inf
        token = logits.argmax(-1)
        if step == 0 and forced_bos is not None:
            token[:] = forced_bos
        elif step == self.meta["max_new_tokens"] - 1 and forced_eos is not None:
            token[:] = forced_eos
        return token

    def greedy_seq2seq(self, encoded: list[list[int]]) -> list[list[int]]:
        width = max(len(ids) for ids in encoded)
        input_ids = np.full((len(encoded), width), self.pad, dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for row, ids in enumerate(encoded):
            input_ids[row, : len(ids)], mask[row, : len(ids)] = ids, 1
        hidden = self.encoder.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]
        dec = np.full((len(encoded), 1), self.meta["decoder_start_token_id"], dtype=np.int64)
        done = np.zeros(len(encoded), dtype=bool)
        for step in range(self.meta["max_new_tokens"]):
            logits = self.decoder.run(None, {"decoder_input_ids": dec, "encoder_hidden_states": hidden, "attention_mask": mask})[0]
            token = np.where(done, self.pad, self.next_token(logits[:, -1, :], step, dec))
            dec = np.concatenate([dec, token[:, None]], axis=1)
            done |= np.isin(token, list(self.eos))
            if done.all():
                break
        return [row[1:].tolist() for row in dec]

    def greedy_causal(self, ids: list[int]) -> list[int]:
        seq = np.array([ids], dtype=np.int64)
        new: list[int] = []
        for step in range(self.meta["max_new_tokens"]):
            logits = self.model.run(None, {"input_ids": seq, "attention_mask": np.ones_like(seq)})[0]
            token = self.next_token(logits[:, -1, :], step, seq)
            new.append(int(token[0]))
            seq = np.concatenate([seq, token[:, None]], axis=1)
            if new[-1] in self.eos:
                break
        return new


def check_ids(ids: np.ndarray, name: str, vocab_size: int) -> None:
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise BadInput(f"{name} must be [batch, seq] with seq >= 1, got shape {list(ids.shape)}")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise BadInput(f"{name} holds ids outside [0, {vocab_size})")
