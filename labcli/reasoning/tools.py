"""Tools for language models: a registry, Toolformer's call format and filter, a ReAct loop.

- `Tool` / `registry()`: named functions from text to text; `calculator` evaluates + - * / on
  numbers (Python's ast, nothing else is evaluated), `Retriever` returns the passage closest to a
  query (TF-IDF cosine, numpy); `shipped_passages()` is shipped text to search (StrategyQA's facts).
  `labcli.reasoning.tools_langchain` turns these tools into LangChain tools and back.
- Toolformer (Schick et al. 2023): an API call is written `[Calculator(3 * 4) -> 12]` inside the
  text (the paper's arrow is "→"; ASCII "->" keeps byte-level tokenizers small) ; `find_calls`
  parses, `execute` fills in results. A sampled call at position i is kept when
  min(L(no call), L(call without result)) - L(call with result) >= τ, each L the loss of the
  tokens after i weighted by w_t ∝ max(0, 1 - 0.2 t) (`call_weights`, `call_losses`, `keep_call`);
  `generate_with_tools` runs a call when decoding reaches its arrow and inserts the result.
- `react`: Thought / Action: tool[input] / Observation turns until `Final Answer:`, with any
  text generator and the same registry (the agent API other recipes use).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from labcli.errors import UserError

ARROW = "->"
CALL = re.compile(r"\[(\w+)\(([^()\[\]]*)\)(?:\s*" + re.escape(ARROW) + r"\s*([^\]]*))?\]")


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    fn: Callable[[str], str]
    arg: str = "input"  # what its one argument is called (the schema LangChain shows a model)

    def __call__(self, arg: str) -> str:
        return self.fn(arg)


# ---- calculator ------------------------------------------------------------------------------

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    raise ValueError("only numbers and + - * / ( ) are allowed")


def calculator(expr: str) -> str:
    """Evaluate an arithmetic expression; the result as text (whole numbers without '.0', else 2
    decimals, as the paper's calculator rounds). Anything else -> 'error: ...' (a tool never raises)."""
    try:
        value = _evaluate(ast.parse(expr.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError) as exc:
        return f"error: {exc.__class__.__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return "error: overflow"
    if float(value) == int(value):
        return str(int(value))
    return f"{value:.2f}"


# ---- retrieval -------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


class Retriever:
    """TF-IDF (log-scaled idf, L2-normalised rows) over passages; `search(q, k)` returns the top k.
    Rows are kept as an inverted index (word -> passages, weights), so thousands of passages stay small."""

    def __init__(self, passages: list[str]):
        if not passages:
            raise UserError("the retrieval tool has no passages", "give it at least one passage of text")
        self.passages = passages
        counts = [Counter(_words(p)) for p in passages]
        df = Counter(w for c in counts for w in c)
        self.idf = {w: math.log((1 + len(passages)) / (1 + n)) + 1 for w, n in df.items()}
        postings: dict[str, list[tuple[int, float]]] = {}
        for row, c in enumerate(counts):
            norm = max(math.sqrt(sum((n * self.idf[w]) ** 2 for w, n in c.items())), 1e-12)
            for w, n in c.items():
                postings.setdefault(w, []).append((row, n * self.idf[w] / norm))
        self.index = {w: (np.array([r for r, _ in ps]), np.array([x for _, x in ps])) for w, ps in postings.items()}

    def search(self, query: str, k: int = 1) -> list[str]:
        q = {w: n * self.idf[w] for w, n in Counter(_words(query)).items() if w in self.idf}
        norm = max(math.sqrt(sum(x * x for x in q.values())), 1e-12)
        scores = np.zeros(len(self.passages))
        for w, x in q.items():
            rows, weights = self.index[w]
            scores[rows] += weights * x / norm
        return [self.passages[i] for i in np.argsort(-scores, kind="stable")[:k]]

    def tool(self) -> Tool:
        return Tool("Search", "the passage most relevant to a query", lambda q: self.search(q, 1)[0], arg="query")


def shipped_passages(split: str = "train") -> list[str]:
    """Shipped text for the retrieval tool: the facts written for StrategyQA's questions (MIT,
    labcli/data/strategyqa), each once, in file order."""
    from labcli.data import strategyqa

    return list(dict.fromkeys(f.strip() for r in strategyqa.read(split) for f in r["facts"] if f.strip()))


def registry(passages: list[str] | None = None) -> dict[str, Tool]:
    """The tools by name: Calculator, and Search when passages are given."""
    tools = {"Calculator": Tool("Calculator", "evaluates + - * / on numbers", calculator, arg="expression")}
    if passages:
        tools["Search"] = Retriever(passages).tool()
    return tools


# ---- Toolformer ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    tool: str
    arg: str
    result: str | None
    start: int  # character span of the whole "[...]" in the text
    end: int

    def text(self, with_result: bool = True) -> str:
        return format_call(self.tool, self.arg, self.result if with_result else None)


def format_call(tool: str, arg: str, result: str | None = None) -> str:
    return f"[{tool}({arg})" + (f" {ARROW} {result}]" if result is not None else "]")


def find_calls(text: str) -> list[Call]:
    return [Call(m.group(1), m.group(2), m.group(3).strip() if m.group(3) is not None else None, m.start(), m.end())
            for m in CALL.finditer(text)]


def execute(text: str, tools: dict[str, Tool]) -> str:
    """Fill in the result of every call without one (unknown tools are left as they are)."""
    out, last = [], 0
    for call in find_calls(text):
        out.append(text[last:call.start])
        if call.result is None and call.tool in tools:
            out.append(format_call(call.tool, call.arg, tools[call.tool](call.arg)))
        else:
            out.append(text[call.start:call.end])
        last = call.end
    return "".join(out) + text[last:]


def strip_calls(text: str) -> str:
    """The text with every call removed (what the model sees without tools)."""
    return CALL.sub("", text)


def call_weights(n: int, decay: float = 0.2) -> np.ndarray:
    """w_t = max(0, 1 - decay * t) for t = 0..n-1, normalised to sum 1 (Toolformer eq. 1)."""
    w = np.maximum(0.0, 1.0 - decay * np.arange(n))
    return w / w.sum() if w.sum() > 0 else w


def weighted_loss(token_nll: np.ndarray, decay: float = 0.2) -> float:
    """Σ_t w_t · NLL of the t-th token after the call position."""
    token_nll = np.asarray(token_nll, dtype=float)
    return float((call_weights(len(token_nll), decay) * token_nll).sum())


def continuation_nll(model, tokenizer, prefix: str, text: str, position: int) -> np.ndarray:
    """NLL of each token of text[position:] when the model reads prefix + text (one forward pass).
    Toolformer prepends the call z to the text (L_i(z) in eq. 1); the text before and after the
    position is tokenised separately so that every variant scores the same tokens."""
    import torch
    import torch.nn.functional as F

    ids = [tokenizer(part, add_special_tokens=False)["input_ids"] for part in (prefix, text[:position], text[position:])]
    seq = torch.tensor([ids[0] + ids[1] + ids[2]], device=next(model.parameters()).device)
    start = len(ids[0]) + len(ids[1])
    if start == 0:
        raise ValueError("continuation_nll needs at least one token before the scored ones")
    with torch.no_grad():
        logits = model(input_ids=seq).logits[0, start - 1:-1].float()
    return F.cross_entropy(logits, seq[0, start:], reduction="none").cpu().numpy()


def call_losses(model, tokenizer, text: str, position: int, call: Call | tuple[str, str, str],
                decay: float = 0.2, bos: str = "") -> tuple[float, float, float]:
    """(L(no call), L(call without result), L(call with result)) of the tokens after `position`,
    weighted by call_weights: the three numbers `keep_call` compares."""
    tool, arg, result = (call.tool, call.arg, call.result) if isinstance(call, Call) else call
    variants = [bos, bos + format_call(tool, arg) + " ", bos + format_call(tool, arg, result) + " "]
    return tuple(weighted_loss(continuation_nll(model, tokenizer, z, text, position), decay) for z in variants)


def keep_call(loss_without: float, loss_call_no_result: float, loss_with_result: float, tau: float = 1.0) -> bool:
    """Toolformer's filter: L- - L+ >= τ, with L- the smaller of "no call" and "call without result"."""
    return min(loss_without, loss_call_no_result) - loss_with_result >= tau



def call_losses_batch(model, tokenizer, text: str, position: int, calls: list[tuple[str, str, str]],
                      decay: float = 0.2, bos: str = "", inline: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """`call_losses` for several calls at one position in one padded forward pass: (L(no call),
    L(call without result) per call, L(call with result) per call). Only the tokens with a non-zero
    weight are fed after the position, which leaves every weighted loss unchanged. `inline`: the call
    is written at the position (where finetuning and decoding put it) instead of prepended to the text."""
    import torch
    import torch.nn.functional as F

    def ids(part: str) -> list[int]:
        return tokenizer(part, add_special_tokens=False)["input_ids"]

    before, after = ids(text[:position]), ids(text[position:])
    after = after[:max(1, int(np.count_nonzero(call_weights(len(after), decay))))]
    zs = [""] + [format_call(t, a) + " " for t, a, _ in calls] + [format_call(t, a, r) + " " for t, a, r in calls]
    if inline:
        seqs = [ids(bos) + ids(text[:position] + z) + after for z in zs]
    else:
        seqs = [ids(bos + z) + before + after for z in zs]
    if len(seqs[0]) == len(after):
        raise ValueError("call_losses_batch needs at least one token before the scored ones")
    width = max(map(len, seqs))
    device = next(model.parameters()).device
    batch = torch.tensor([s + [tokenizer.pad_token_id] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    with torch.no_grad():
        logits = model(input_ids=batch, attention_mask=mask).logits.float()
    n = len(after)
    target = torch.tensor(after, device=device)
    losses = []
    for row, s in enumerate(seqs):
        start = len(s) - n
        nll = F.cross_entropy(logits[row, start - 1:start - 1 + n], target, reduction="none").cpu().numpy()
        losses.append(weighted_loss(nll, decay))
    losses = np.array(losses)
    return float(losses[0]), losses[1:1 + len(calls)], losses[1 + len(calls):]


OPEN_CALL = re.compile(r"\[(\w+)\(([^()\[\]]*)\)\s*" + re.escape(ARROW) + r"\s*$")


def generate_with_tools(next_text: Callable[[str], str], prompt: str, tools: dict[str, Tool], max_calls: int = 8) -> str:
    """Toolformer's decoding: `next_text(text)` continues the text and stops after writing the arrow
    of a call (or at its end); when the text ends in an open call `[Tool(arg) ->`, the tool runs and
    ` result]` is appended before decoding goes on. Returns the completion (without the prompt)."""
    text = prompt
    for _ in range(max_calls + 1):
        text += next_text(text)
        call = OPEN_CALL.search(text)
        if call is None:
            break
        tool = tools.get(call.group(1))
        result = tool(call.group(2)) if tool else f"error: unknown tool {call.group(1)}"
        text = text[:call.start()] + format_call(call.group(1), call.group(2), result)
    return text[len(prompt):]


# ---- ReAct -----------------------------------------------------------------------------------

ACTION = re.compile(r"Action:\s*(\w+)\[(.*?)\]")
FINAL = re.compile(r"Final Answer:\s*(.*)")


@dataclass
class Trace:
    prompt: str
    answer: str | None
    steps: list[tuple[str, str, str]]  # (tool, input, observation)


def react(generate: Callable[[str], str], tools: dict[str, Tool], question: str, max_turns: int = 5) -> Trace:
    """ReAct (Yao et al. 2023): the model writes Thought/Action; each `Action: Tool[input]` is run and
    its `Observation:` appended; stops at `Final Answer:` or after max_turns. `generate(prompt)`
    returns the model's next chunk of text (stopping at "Observation:" is its choice)."""
    names = ", ".join(f"{t.name} ({t.description})" for t in tools.values())
    prompt = f"Tools: {names}.\nQuestion: {question}\n"
    steps: list[tuple[str, str, str]] = []
    for _ in range(max_turns):
        chunk = generate(prompt).split("Observation:")[0]
        prompt += chunk
        final = FINAL.search(chunk)
        action = ACTION.search(chunk)
        if final and (not action or final.start() < action.start()):
            return Trace(prompt, final.group(1).strip(), steps)
        if not action:
            return Trace(prompt, None, steps)
        tool, arg = action.group(1), action.group(2)
        observation = tools[tool](arg) if tool in tools else f"error: unknown tool {tool} (tools: {', '.join(tools)})"
        steps.append((tool, arg, observation))
        prompt += ("" if prompt.endswith("\n") else "\n") + f"Observation: {observation}\n"
    return Trace(prompt, None, steps)


def generate_with_tools_batch(model, tokenizer, prompts: list[str], tools: dict[str, Tool] | None, *,
                              max_new_tokens: int, max_calls: int = 8) -> tuple[list[str], list[int]]:
    """Greedy Toolformer decoding of many prompts at once (KV-cached): when a row's completion ends in
    an open call `[Tool(arg) ->`, the tool runs and the tokens of ` result]` are fed as that row's next
    tokens before the model decodes on. `tools=None` decodes the same model with no tool: it writes
    the result itself. Returns (completions, calls executed per row)."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    mask = torch.cat([enc["attention_mask"], enc["attention_mask"].new_ones(len(prompts), max_new_tokens)], 1)
    plen = enc["input_ids"].shape[1]
    position = (enc["attention_mask"].cumsum(1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], position_ids=position,
                       cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        generated: list[list[int]] = [[] for _ in prompts]
        forced: list[list[int]] = [[] for _ in prompts]
        calls = [0] * len(prompts)
        done = [False] * len(prompts)
        for t in range(max_new_tokens):
            token = logits.argmax(-1).tolist()
            for row in range(len(prompts)):
                if done[row]:
                    token[row] = pad
                    continue
                if forced[row]:
                    token[row] = forced[row].pop(0)
                generated[row].append(token[row])
                if token[row] == eos:
                    done[row] = True
                elif tools is not None and not forced[row] and calls[row] < max_calls:
                    text = tokenizer.decode(generated[row], skip_special_tokens=True)
                    call = OPEN_CALL.search(text) if text.rstrip().endswith(ARROW) else None
                    if call:
                        tool = tools.get(call.group(1))
                        result = tool(call.group(2)) if tool else f"error: unknown tool {call.group(1)}"
                        forced[row] = tokenizer(f" {result}]", add_special_tokens=False)["input_ids"]
                        calls[row] += 1
            if all(done) or t == max_new_tokens - 1:
                break
            step = torch.tensor(token, device=device)[:, None]
            logits = model(input_ids=step, attention_mask=mask[:, :plen + t + 1], position_ids=position[:, -1:] + 1 + t,
                           cache=cache, use_cache=True).logits[:, -1]
    model.train(was_training)
    return [tokenizer.decode(g, skip_special_tokens=True) for g in generated], calls
