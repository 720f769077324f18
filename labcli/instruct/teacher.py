"""A teacher writes text for the instruction pipelines: one interface, three sources.

- an OpenAI-compatible endpoint (`http(s)://host/v1`, vLLM, TGI, llama.cpp server, OpenAI): the
  legacy `/completions` route the Self-Instruct reference used, key from an environment variable;
- a hub id or a local save_pretrained folder, loaded with lab's `load_model`;
- offline by default, a `tiny-*` preset built here and first trained (through the engine) on the
  seed tasks written in the pipeline's own formats, so the pipeline runs end to end. Such a teacher
  only recombines its seed text; its output says nothing about what a real LM would write.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from labcli.errors import UserError


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_tokens reached)


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found (an API excludes the stop)."""
    hits = [text.find(s) for s in stop if s and s in text]
    return (text[:min(hits)], True) if hits else (text, False)


class EndpointTeacher:
    """POST {base}/completions of an OpenAI-compatible server."""

    def __init__(self, base_url: str, model: str, key_env: str = "OPENAI_API_KEY", timeout: float = 300.0):
        if not model:
            raise UserError(f"teacher {base_url} is an endpoint and no model name was given",
                            "add teacher_model=NAME (the name the server serves)")
        self.url = base_url.rstrip("/") + "/completions"
        self.model, self.key_env, self.timeout = model, key_env, timeout
        self.name = f"{model} @ {base_url}"

    def complete(self, prompts: list[str], *, max_tokens: int, temperature: float, top_p: float,
                 stop: list[str], presence_penalty: float = 0.0) -> list[Completion]:
        from labcli.serving.clients import post

        body = {"model": self.model, "prompt": prompts, "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "stop": stop[:4], "presence_penalty": presence_penalty, "n": 1}
        key = os.environ.get(self.key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            status, text = post(self.url, json.dumps(body).encode("utf-8"), headers, timeout=self.timeout)
        except OSError as exc:
            raise UserError(f"teacher endpoint {self.url} is unreachable: {exc}", "check the URL and that the server runs") from None
        if status != 200:
            raise UserError(f"teacher endpoint {self.url} answered HTTP {status}: {text[:160]}",
                            f"check teacher_model and the key in ${self.key_env}")
        choices = sorted(json.loads(text)["choices"], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise UserError(f"teacher endpoint returned {len(choices)} choices for {len(prompts)} prompts",
                            "use a server that accepts a list of prompts (OpenAI completions API)")
        out = []
        for c in choices:  # servers differ on whether the stop string is included; cut it here too
            body_text, _ = cut_at_stop(c.get("text") or "", stop)
            out.append(Completion(body_text, "length" if c.get("finish_reason") == "length" else "stop"))
        return out


class PresencePenalty:
    """A transformers logits processor: logit -= penalty for each token that occurs in the completion so
    far (not the prompt), once however often it occurred; the OpenAI API's `presence_penalty`."""

    def __init__(self, penalty: float, prompt_len: int):
        self.penalty, self.prompt_len = penalty, prompt_len

    def __call__(self, input_ids, scores):
        seen = input_ids[:, self.prompt_len:]
        if seen.shape[1]:
            hit = scores.new_zeros(scores.shape, dtype=bool).scatter_(1, seen, True)
            scores = scores - self.penalty * hit
        return scores


class LocalTeacher:
    """A causal LM in this process; sampling with transformers' generate (temperature, top_p)."""

    def __init__(self, model, tokenizer, name: str, seed: int = 0):
        import torch

        self.model, self.tokenizer, self.name = model.eval(), tokenizer, name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.generator_seed = seed
        self.calls = 0
        self.context = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", 2048)
        self._torch = torch

    def complete(self, prompts: list[str], *, max_tokens: int, temperature: float, top_p: float,
                 stop: list[str], presence_penalty: float = 0.0) -> list[Completion]:
        """`presence_penalty` as OpenAI defines it: minus that much on the logit of every token already
        in the completion (PresencePenalty below)."""
        from transformers import LogitsProcessorList

        torch = self._torch
        device = next(self.model.parameters()).device
        keep = max(1, self.context - max_tokens)  # left-truncate prompts so prompt + completion fit
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v[:, -keep:].to(device) for k, v in enc.items()}
        torch.manual_seed(self.generator_seed * 1_000_003 + self.calls)
        self.calls += 1
        sample = temperature > 0
        kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sample else dict(do_sample=False)
        with torch.no_grad():
            processors = LogitsProcessorList([PresencePenalty(presence_penalty, enc["input_ids"].shape[1])] if presence_penalty else [])
            out = self.model.generate(**enc, max_new_tokens=max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=self.tokenizer.eos_token_id, logits_processor=processors, **kwargs)
        new = out[:, enc["input_ids"].shape[1]:]
        result = []
        for row in new:
            ended = bool((row == self.tokenizer.eos_token_id).any())
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, stop)
            result.append(Completion(text, "stop" if ended or stopped else "length"))
        return result


def load_teacher(spec: str, model_name: str | None, key_env: str, seed: int, device):
    """An endpoint (http[s]://...) or a model by hub id / local folder."""
    if spec.startswith(("http://", "https://")):
        return EndpointTeacher(spec, model_name or "", key_env)
    if spec.startswith((".", "/", "~")) and not Path(spec).expanduser().exists():
        raise UserError(f"teacher model folder not found: {spec}",
                        "pass a save_pretrained folder, a hub id (LAB_ONLINE=1), a tiny-* preset or http(s)://HOST/v1")
    from labcli.models import load_model

    loaded = load_model(spec, "causal-lm", seed=seed)
    return LocalTeacher(loaded.model.to(device), loaded.tokenizer, spec, seed)


def warm_tiny_teacher(preset: str, texts: list[str], train_cfg, ctx, *, seed: int, device, vocab_size: int = 2000,
                      block_size: int = 128, context: int = 1024) -> tuple[LocalTeacher, dict]:
    """Build `preset` (tokenizer trained on `texts`) and train it on `texts` with the engine, so an
    offline pipeline has a teacher that writes text in the formats it prompts for."""
    from labcli.data.text import collate_lm, lm_blocks
    from labcli.engine.trainer import train
    from labcli.models import load_model

    overrides = {"n_positions": context} if preset == "tiny-gpt2" else {"max_position_embeddings": context}
    loaded = load_model(preset, "causal-lm", tokenizer_texts=lambda: texts, vocab_size=vocab_size, seed=seed,
                        preset_overrides=overrides)
    blocks = lm_blocks(texts, loaded.tokenizer, block_size)
    n_eval = max(1, len(blocks) // 20)
    result = train(loaded.model, blocks[n_eval:], collate_lm, train_cfg, ctx, seed=seed, device=device,
                   eval_set=blocks[:n_eval], progress=False)
    note = {"teacher": f"{preset} (trained here on the seed tasks)", "teacher_steps": result.steps,
            "teacher_final_loss": round(result.final_loss, 4),
            "teacher_eval_loss": None if result.eval_loss is None else round(result.eval_loss, 4)}
    return LocalTeacher(result.model, loaded.tokenizer, preset, seed), note
