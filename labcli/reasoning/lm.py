"""Language-model plumbing shared by CoT SFT, GRPO/DAPO and the evaluation: prompt-masked SFT
examples (batched by `labcli.data.text.padded_collate`), batched generation, per-token
log-probabilities and entropy, and accuracy on a test set."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labcli.reasoning import rewards
from labcli.reasoning.tasks import Example


def sft_example(tokenizer, prompt: str, target: str, max_len: int) -> dict:
    """Token ids of prompt + target + EOS, with the prompt masked out of the loss (labels -100)."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = (p + t)[-max_len:]
    labels = ([-100] * len(p) + t)[-max_len:]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}


@dataclass
class Completions:
    sequences: torch.Tensor  # [N, P + T] left-padded prompt then completion (pad after EOS)
    attention_mask: torch.Tensor  # [N, P + T]
    completion_mask: torch.Tensor  # [N, T] 1 on completion tokens up to and including EOS
    prompt_len: int
    texts: list[str]
    truncated: list[bool]  # no EOS within max_new_tokens

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, num_return: int = 1,
             sample: bool = False, temperature: float = 1.0, device=None) -> Completions:
    """`num_return` completions per prompt (consecutive), greedy or sampled with temperature.

    The same distribution and the same random draws as HF `generate(do_sample=True, top_k=0,
    top_p=1)`, in a short KV-cached loop: each prompt is encoded once and its cache repeated
    `num_return` times (HF encodes every copy), and there are no logits processors to run.
    """
    from transformers import DynamicCache

    device = device or next(model.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    prompt_mask = enc["attention_mask"]
    cache = DynamicCache(config=model.config)
    position = (prompt_mask.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=enc["input_ids"], attention_mask=prompt_mask, position_ids=position, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1].float()
    if num_return > 1:
        cache.batch_repeat_interleave(num_return)
        logits, prompt_mask, position = (x.repeat_interleave(num_return, 0) for x in (logits, prompt_mask, position))
    n = logits.shape[0]
    next_position = position[:, -1:] + 1
    mask = torch.cat([prompt_mask, prompt_mask.new_ones(n, max_new_tokens)], 1)
    plen = prompt_mask.shape[1]
    unfinished = torch.ones(n, dtype=torch.bool, device=device)
    tokens = []
    for t in range(max_new_tokens):
        if sample:
            probs = (logits / temperature if temperature != 1.0 else logits).softmax(-1)
            token = torch.multinomial(probs, num_samples=1).squeeze(1)
        else:
            token = logits.argmax(-1)
        token = torch.where(unfinished, token, pad)
        tokens.append(token)
        unfinished &= token != eos
        if t == max_new_tokens - 1 or not unfinished.any():
            break
        logits = model(input_ids=token[:, None], attention_mask=mask[:, :plen + t + 1], position_ids=next_position + t,
                       cache=cache, use_cache=True).logits[:, -1].float()
    model.train(was_training)
    comp = torch.stack(tokens, 1)
    out = torch.cat([enc["input_ids"].repeat_interleave(num_return, 0), comp], 1)
    is_eos = comp == eos
    # keep tokens up to and including the first EOS
    after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
    comp_mask = (~after_eos).long()
    truncated = (~is_eos.any(1)).tolist()
    texts = tokenizer.batch_decode(comp.masked_fill(after_eos | is_eos, pad), skip_special_tokens=True)
    return Completions(out, torch.cat([prompt_mask, comp_mask], 1), comp_mask, plen, texts, truncated)


def token_logprobs(model, sequences, attention_mask, prompt_len: int, with_entropy: bool = False, temperature: float = 1.0):
    """log p(token) of every completion token, [N, T], under the distribution the tokens were sampled
    from (logits / temperature); plus that distribution's entropy per token if asked."""
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)
    keep = sequences.shape[1] - prompt_len + 1  # the LM head runs only where completion tokens are predicted
    logits = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=keep).logits
    logits = logits[:, -keep:-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    logp_all = logits.log_softmax(-1)
    logp = logp_all.gather(-1, sequences[:, prompt_len:].unsqueeze(-1)).squeeze(-1)
    if not with_entropy:
        return logp, None
    with torch.no_grad():
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def accuracy(model, tokenizer, examples: list[Example], prompts: list[str], *, max_new_tokens: int,
             batch_size: int = 64, label: str = "evaluating", progress: bool = True) -> dict:
    """Greedy decoding on every example: accuracy, format rate, mean completion length.
    `progress`: a transient progress bar (when there are 3 batches or more)."""
    from rich.progress import track

    correct = formatted = length = 0.0
    samples = []
    batches = range(0, len(examples), batch_size)
    quiet = not progress or len(batches) < 3
    for lo in (batches if quiet else track(batches, description=label, transient=True)):
        out = generate(model, tokenizer, prompts[lo:lo + batch_size], max_new_tokens=max_new_tokens)
        for ex, text, trunc, n in zip(examples[lo:lo + batch_size], out.texts, out.truncated, out.lengths.tolist()):
            correct += rewards.correctness_reward(text, ex)
            formatted += rewards.format_reward(text, trunc)
            length += n
            if len(samples) < 3:
                samples.append({"question": ex.question, "gold": ex.answer, "completion": text.strip()})
    n = max(len(examples), 1)
    return {"accuracy": correct / n, "format_rate": formatted / n, "mean_length": length / n, "n": len(examples),
            "samples": samples}
