"""The LM subgoal planner: goal + knowledge graph (+ the subgoals done) -> chain of thought -> subgoal.

A prompt is the goal, the graph as text and the subgoals done so far; the completion is

    think: <the reasons, "; "-separated> \\nsubgoal: <the next subgoal>

Any causal LM can fill it in (`lm.model`): "trained" (the offline default: lab's tiny-gpt2 preset
trained here, on the engine, on traces of the symbolic planner over games and missions that are
never evaluated), a hub id or a local folder (loaded by labcli.models.load_model; hub ids need the
cache or LAB_ONLINE=1), or the URL of an OpenAI-compatible server (POST URL/v1/completions, greedy).
The subgoal is read from the line after "subgoal:"; a completion without one proposes nothing
(counted, and the executor gets "look" / "explore").
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass

from pydantic import Field

from labcli.config import Section
from labcli.engine.trainer import TrainConfig
from labcli.errors import UserError


def lm_train_defaults() -> TrainConfig:
    return TrainConfig(max_steps=400, batch_size=8, micro_batch_size=8, lr=2e-3, warmup_steps=20,
                       tensorboard=False, log_every=20)


class LMConfig(Section):
    """The LM planner (the `lm:` section)."""

    model: str = Field("trained", description="trained (tiny-gpt2 trained here on the planner's traces), a hub id, "
                                              "a local model folder, or http(s)://HOST:PORT of an OpenAI-compatible server")
    endpoint_model: str = Field("default", description="the model name sent to an OpenAI-compatible server")
    max_new_tokens: int = Field(96, ge=8, description="tokens generated per proposal (reasons and subgoal)")
    trace_episodes: int = Field(3, ge=1, description="planner episodes per training game or mission set for the traces")
    trace_noise: float = Field(0.2, ge=0, le=1, description="share of random actions in the traced episodes (states off the planner's path)")
    vocab_size: int = Field(1024, ge=100, description="BPE vocabulary of the trained LM")
    layers: int = Field(2, ge=1, description="layers of the trained LM (tiny-gpt2, 128 wide)")
    train: TrainConfig = Field(default_factory=lm_train_defaults)


def completion(thoughts: list[str], subgoal: str) -> str:
    return f" think: {'; '.join(thoughts)}\nsubgoal: {subgoal}"


def parse_completion(text: str) -> tuple[str, str | None]:
    """(the reasons, the subgoal or None)."""
    match = re.search(r"subgoal:\s*([^\n]+)", text)
    thoughts = text.split("subgoal:")[0].replace("think:", "").strip()
    return thoughts, match.group(1).strip().rstrip(".") if match else None


@dataclass
class Proposal:
    prompt: str
    text: str
    subgoal: str | None


class SubgoalLM:
    """Batched greedy proposals from a causal LM (a transformers model or an endpoint)."""

    def __init__(self, name: str, model=None, tokenizer=None, url: str | None = None, endpoint_model: str = "default",
                 max_new_tokens: int = 96):
        self.name, self.model, self.tokenizer, self.url = name, model, tokenizer, url
        self.endpoint_model, self.max_new_tokens = endpoint_model, max_new_tokens
        self.calls = 0
        self.cache: dict[str, Proposal] = {}

    def propose(self, prompts: list[str]) -> list[Proposal]:
        """Greedy completions; a prompt seen before is answered from the cache (greedy is deterministic)."""
        new = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        for lo in range(0, len(new), 32):
            chunk = new[lo:lo + 32]
            texts = self._endpoint(chunk) if self.url else self._local(chunk)
            self.calls += len(chunk)
            for prompt, text in zip(chunk, texts):
                self.cache[prompt] = Proposal(prompt, text, parse_completion(text)[1])
        return [self.cache[p] for p in prompts]

    def _local(self, prompts: list[str]) -> list[str]:
        from labcli.reasoning.lm import generate

        return generate(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens).texts

    def _endpoint(self, prompts: list[str]) -> list[str]:
        body = json.dumps({"model": self.endpoint_model, "prompt": prompts, "max_tokens": self.max_new_tokens,
                           "temperature": 0}).encode()
        request = urllib.request.Request(self.url.rstrip("/") + "/v1/completions", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                choices = json.loads(response.read())["choices"]
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            raise UserError(f"lm.model {self.url}: no completions ({type(exc).__name__}: {str(exc)[:120]})",
                            "start an OpenAI-compatible server there (POST /v1/completions), or use lm.model=trained") from None
        texts = [""] * len(prompts)
        for i, choice in enumerate(sorted(choices, key=lambda c: c.get("index", 0))):
            texts[choice.get("index", i)] = choice.get("text", "")
        return texts


def load(cfg: LMConfig, examples: list[tuple[str, str]], run, seed: int, progress: bool = True) -> tuple[SubgoalLM, dict]:
    """The LM planner `cfg.model` names; "trained" trains tiny-gpt2 on `examples` (prompt, completion)
    in the sub-run `run`. Returns the LM and what to report about it."""
    if cfg.model.startswith(("http://", "https://")):
        return SubgoalLM(cfg.model, url=cfg.model, endpoint_model=cfg.endpoint_model, max_new_tokens=cfg.max_new_tokens), \
            {"lm": cfg.model, "kind": "OpenAI-compatible endpoint"}
    from labcli.models import load_model

    if cfg.model != "trained":
        loaded = load_model(cfg.model, "causal-lm", seed=seed)
        if loaded.tokenizer.pad_token is None:
            loaded.tokenizer.pad_token = loaded.tokenizer.eos_token
        loaded.model.eval()
        return SubgoalLM(cfg.model, loaded.model, loaded.tokenizer, max_new_tokens=cfg.max_new_tokens), \
            {"lm": cfg.model, "kind": "pretrained causal LM, used as is"}
    return train(cfg, examples, run, seed, progress)


def check_endpoint(cfg: LMConfig, agents: list[str]) -> None:
    """When the `lm+rl` agent's planner is an OpenAI-compatible endpoint, ask it once now, so a dead
    endpoint fails (one line) before any training or evaluation."""
    if "lm+rl" in agents and cfg.model.startswith(("http://", "https://")):
        load(cfg, [], None, 0)[0].propose(["goal: ready?\n"])


def train(cfg: LMConfig, examples: list[tuple[str, str]], run, seed: int, progress: bool = True) -> tuple[SubgoalLM, dict]:
    import torch

    from labcli.data.text import padded_collate
    from labcli.engine.trainer import train as train_loop
    from labcli.models import load_model
    from labcli.reasoning.lm import sft_example

    if not examples:
        raise UserError("no planner traces to train the LM planner on", "raise lm.trace_episodes")
    texts = [p + c for p, c in examples]
    loaded = load_model("tiny-gpt2", "causal-lm", tokenizer_texts=lambda: texts, vocab_size=cfg.vocab_size, seed=seed,
                        preset_overrides={"n_layer": cfg.layers, "n_positions": 1024})
    tokenizer = loaded.tokenizer
    data = [sft_example(tokenizer, p, c, 1024) for p, c in examples]
    longest = max(len(d["input_ids"]) for d in data)
    result = train_loop(loaded.model, data, padded_collate(tokenizer.pad_token_id), cfg.train, run, seed=seed,
                        device=torch.device("cpu"), progress=progress)
    model = result.model.eval()
    return SubgoalLM("trained", model, tokenizer, max_new_tokens=cfg.max_new_tokens), {
        "lm": "tiny-gpt2 trained here", "kind": f"{cfg.layers} layers x 128, BPE {len(tokenizer)}",
        "examples": len(examples), "longest_tokens": longest, "steps": result.steps,
        "final_loss": round(result.final_loss, 4), "train_s": round(result.wall_s, 1)}


def accuracy(lm: SubgoalLM, examples: list[tuple[str, str]]) -> dict:
    """Share of held-out prompts whose proposed subgoal equals the planner's, and of well-formed completions."""
    proposals = lm.propose([p for p, _ in examples])
    right = sum(pr.subgoal == parse_completion(c)[1] for pr, (_, c) in zip(proposals, examples))
    formed = sum(pr.subgoal is not None for pr in proposals)
    n = max(1, len(examples))
    return {"subgoal_match": round(right / n, 3), "well_formed": round(formed / n, 3), "n": len(examples)}
