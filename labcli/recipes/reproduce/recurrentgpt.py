"""`lab reproduce recurrentgpt`: RecurrentGPT's memory (Zhou et al. 2023) checked by recall of planted facts.

The recurrence is labcli/instruct/recurrentgpt.py: each step the LM reads (short-term memory, the
long-term paragraphs retrieved for the plan, the plan) and writes a paragraph, a new memory and the
next plan; paragraphs go into a vector memory. Any causal LM works (`model=`: a hub id, a local
folder, or an OpenAI-compatible endpoint URL, with `model_name=`); offline, a small word-level
GPT-2 is trained here on a generated story corpus written in the recurrence's format plus
questions answered from related paragraphs. The paper has no numeric benchmark, so the claim
checked is the mechanism's: facts planted in the first paragraphs of a text that grows far beyond
the LM's context are recalled from retrieved paragraphs, and not from the last tokens that fit.
"""

from __future__ import annotations

import random

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.runs import Run

PAPER = "RecurrentGPT: Interactive Generation of (Arbitrarily) Long Text (Zhou et al. 2023)"
PETS = ["fox", "cat", "dog", "owl", "goat", "horse", "rabbit", "parrot", "turtle", "snake"]
PLACES = ["market", "river", "forest", "school", "harbor", "library", "garden", "bridge", "castle", "station"]
OBJECTS = ["lamp", "map", "coin", "book", "rope", "key", "bell", "cup", "hat", "shell"]
NAMES = ["Ava", "Ben", "Cleo", "Dev", "Elif", "Femi", "Gita", "Hugo", "Ines", "Jon", "Kemal", "Lena", "Mira", "Nour",
         "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]


class Config(RecipeConfig):
    model: str = Field("offline", description="offline (a small GPT-2 trained here), a hub id, a local folder, or an "
                                              "OpenAI-compatible endpoint URL (http[s]://HOST/v1)")
    model_name: str | None = Field(None, description="The model name an endpoint serves")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding an endpoint's key")
    context: int = Field(128, ge=32, description="Context window (tokens) of the offline LM")
    layers: int = Field(2, ge=1, description="Blocks of the offline LM")
    width: int = Field(64, ge=8, description="Hidden size of the offline LM")
    heads: int = Field(4, ge=1, description="Attention heads of the offline LM")
    train_examples: int = Field(6000, ge=10, description="Generated training texts (half recurrence steps, half questions)")
    train: TrainConfig = TrainConfig(max_steps=800, batch_size=16, micro_batch_size=16, lr=3e-3, warmup_steps=50,
                                     weight_decay=0.01, eval_batches=4)
    stories: int = Field(30, ge=1, description="Long texts generated for the test, each with planted facts")
    facts: int = Field(3, ge=1, le=10, description="Facts planted in the first paragraphs of each text")
    steps: int = Field(20, ge=1, description="Recurrence steps (paragraphs the LM writes) after the planted facts")
    k: int = Field(2, ge=1, description="Paragraphs retrieved from the long-term memory")
    recall_bar: float = Field(0.9, description="The issue's bar for recall with retrieval")


def check(cfg: Config) -> list[str]:
    if cfg.model == "offline" and cfg.width % cfg.heads:
        return [f"width={cfg.width} is not a multiple of heads={cfg.heads} (hint: change one of them)"]
    if cfg.model.startswith(("http://", "https://")) and not cfg.model_name:
        return [f"model={cfg.model} is an endpoint and no model_name was given (hint: add model_name=NAME)"]
    return []


def plan(cfg: Config) -> str:
    lm = (f"a {cfg.layers}x{cfg.width} word-level GPT-2 (context {cfg.context}) trained here for {cfg.train.max_steps} steps"
          if cfg.model == "offline" else cfg.model)
    return (f"{lm}; {cfg.stories} texts of {cfg.facts} planted facts + {cfg.steps} recurrence steps; "
            f"recall from {cfg.k} retrieved paragraphs vs the last tokens that fit the context")


# ---- the generated story world ----------------------------------------------------------------

def fact(name: str, pet: str) -> str:
    return f"{name} keeps a {pet} at home ."


def question(name: str) -> str:
    return f"{name} keeps a"


def event(rng: random.Random, name: str, place: str) -> tuple[str, str]:
    """(paragraph, short-term memory) of one plain story step."""
    obj = rng.choice(OBJECTS)
    return f"{name} walks to the {place} . {name} finds a {obj} there .", f"{name} has a {obj} ."


def plan_text(name: str, place: str) -> str:
    return f"{name} goes to the {place}"


def training_texts(n: int, rng: random.Random) -> list[str]:
    """Half recurrence steps (memory, related, plan -> paragraph, memory, plan), half questions
    answered from related paragraphs (the fact among a distractor)."""
    from labcli.instruct.recurrentgpt import State, question_prompt, step_prompt

    out = []
    for i in range(n):
        names = rng.sample(NAMES, 3)
        if i % 2 == 0:
            related = [event(rng, rng.choice(names), rng.choice(PLACES))[0] if rng.random() < 0.7 else
                       fact(rng.choice(names), rng.choice(PETS)) for _ in range(rng.randint(0, 2))]
            state = State(event(rng, names[1], rng.choice(PLACES))[1], plan_text(names[0], rng.choice(PLACES)))
            paragraph, memory = event(rng, names[0], state.plan.split()[-1])
            out.append(f"{step_prompt(state, related)} {paragraph}\nmemory : {memory}\nplan : "
                       f"{plan_text(names[2], rng.choice(PLACES))}")
        else:
            pet = rng.choice(PETS)
            context = [fact(names[0], pet), rng.choice([fact(names[1], rng.choice(PETS)), event(rng, names[1], rng.choice(PLACES))[0]])]
            rng.shuffle(context)
            out.append(f"{question_prompt(' '.join(context), question(names[0]))} {pet}")
    return out


def offline_lm(cfg: Config, ctx: Run, device):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from labcli.data.text import padded_collate
    from labcli.engine.trainer import train
    from labcli.instruct.teacher import LocalTeacher
    from labcli.models.tokenizer import word_tokenizer

    rng = random.Random(cfg.seed)
    texts = training_texts(cfg.train_examples, rng)
    tokenizer = word_tokenizer(texts + [" ".join(NAMES + PETS + PLACES + OBJECTS)])
    torch.manual_seed(cfg.seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=cfg.context, n_embd=cfg.width, n_layer=cfg.layers,
                                       n_head=cfg.heads, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                       eos_token_id=tokenizer.eos_token_id))
    examples = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:cfg.context - 1] + [tokenizer.eos_token_id]
        examples.append({"input_ids": torch.tensor(ids), "labels": torch.tensor(ids)})
    print(f"training a {sum(p.numel() for p in model.parameters()):,}-parameter word-level GPT-2 on {len(texts)} texts",
          flush=True)
    result = train(model, examples[100:], padded_collate(tokenizer.pad_token_id), cfg.train, ctx.sub("lm"), seed=cfg.seed,
                   device=device, eval_set=examples[:100], progress=False)
    note = {"lm": f"{cfg.layers}x{cfg.width} word-level GPT-2 trained here", "train_final_loss": round(result.final_loss, 4),
            "train_eval_loss": None if result.eval_loss is None else round(result.eval_loss, 4)}
    return LocalTeacher(result.model.eval(), tokenizer, "offline", cfg.seed), note


def run(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.engine.distributed import pick_device
    from labcli.errors import UserError
    from labcli.instruct import recurrentgpt as rg
    from labcli.instruct.teacher import load_teacher

    if problems := check(cfg):
        raise UserError(problems[0])
    runs.seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if cfg.model == "offline":
        lm, note = offline_lm(cfg, ctx, device)
    else:
        lm, note = load_teacher(cfg.model, cfg.model_name, cfg.api_key_env, cfg.seed, device), {"lm": cfg.model}
    tokenizer = getattr(lm, "tokenizer", None)
    context = getattr(lm, "context", cfg.context)
    rng = random.Random(cfg.seed + 1)
    rows, followed, written, lengths, samples = [], 0, 0, [], []
    print(f"writing {cfg.stories} texts ({cfg.facts} planted facts + {cfg.steps} recurrence steps each)", flush=True)
    for story in range(cfg.stories):
        names = rng.sample(NAMES, cfg.facts + 1)
        pets = [rng.choice(PETS) for _ in range(cfg.facts)]
        state, memory = rg.State("nothing has happened yet .", plan_text(names[-1], rng.choice(PLACES))), rg.VectorMemory()
        for name, pet in zip(names, pets):
            rg.plant(state, memory, fact(name, pet))
        for _ in range(cfg.steps):
            planned = state.plan
            out = rg.step(lm, state, memory, k=cfg.k, max_tokens=40)
            written += 1
            followed += out["paragraph"].startswith(planned.replace(" goes to", " walks to"))
        text_tokens = len(tokenizer(state.text, add_special_tokens=False)["input_ids"]) if tokenizer else len(state.text.split())
        lengths.append(text_tokens)
        for name, pet in zip(names, pets):
            q = question(name)
            seen = rg.window(tokenizer, state.text, window_tokens(context)) if tokenizer else state.text[-4 * context:]
            with_memory = rg.ask(lm, q, memory=memory, k=cfg.k)
            window_only = rg.ask(lm, q, state=state, tokenizer=tokenizer, window_tokens=window_tokens(context)) if tokenizer else \
                rg.ask(lm, q, memory=rg.VectorMemory(), k=cfg.k)
            rows.append({"story": story, "name": name, "pet": pet, "fact_in_window": fact(name, pet) in seen,
                         "fact_retrieved": fact(name, pet) in memory.search(q, cfg.k),
                         "retrieval": with_memory.split()[:1] == [pet], "window_only": window_only.split()[:1] == [pet]})
        if story < 2:
            samples.append(state.text)
    if ctx.is_main:
        write_results(cfg, ctx, rows, note, followed / max(written, 1), lengths, context, samples, device)


def window_tokens(context: int) -> int:
    """Tokens of the text the window-only baseline reads: the context less room for the question."""
    return context - 16


def f3(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def recall_verdict(retrieval: float | None, window_only: float | None, bar: float, chance: float):
    """Retrieval's recall against the bar; at most `partly` when the window-only baseline is not near
    chance (above twice chance): then the planted facts were not really out of reach."""
    from labcli.eval.claims import verdict

    v = verdict(retrieval, bar - 1e-9, partly=0.5)
    near_chance = verdict(window_only, 2 * chance + 1e-9, above=False) == "holds"
    return "partly" if v == "holds" and not near_chance else v


def claims_for(cfg: Config, summary: dict):
    from labcli.eval.claims import Claim, all_of, verdict

    chance = 1 / len(PETS)
    beyond = summary["questions_beyond_window"]
    return [
        Claim("the long-term memory finds the paragraph a question is about, however far back",
              "section 3: long-term memory searched by embedding for the paragraphs relevant to the current step",
              f"the {beyond} questions about facts outside the window; top-{cfg.k} of each text's paragraphs",
              f"the planted fact among the retrieved paragraphs for {f3(summary['fact_retrieved'])} of questions",
              verdict(summary["fact_retrieved"], cfg.recall_bar - 1e-9, partly=0.5)),
        Claim("a vector long-term memory recalls what lies far beyond the context window",
              "no number in the paper (human evaluation of long texts); the issue's bar: recall >= 0.9 with retrieval, "
              "near chance for the window only", f"{summary['questions']} questions about facts planted in the first "
              f"{cfg.facts} paragraphs of {cfg.stories} texts ({beyond} of them outside the last "
              f"{window_tokens(summary['context'])} tokens, what the window-only baseline reads); top-{cfg.k} paragraphs "
              f"by hashed bag-of-words cosine; {summary['lm']}",
              f"recall {f3(summary['recall_retrieval'])} with retrieval vs {f3(summary['recall_window_only'])} window "
              f"only (chance {chance:.2f})",
              recall_verdict(summary["recall_retrieval"], summary["recall_window_only"], cfg.recall_bar, chance)),
        Claim("the recurrence writes text of any length with a fixed context",
              "section 3: paragraph, short-term memory and plan at each step; long-term memory by embedding search",
              f"{cfg.steps} steps per text, context {summary['context']} tokens",
              f"texts of {summary['mean_text_tokens']:.0f} tokens on average ({summary['mean_text_tokens'] / summary['context']:.1f}x "
              f"the context); {summary['plan_followed']:.3f} of paragraphs follow their plan",
              all_of(verdict(summary["mean_text_tokens"], 2 * summary["context"]), verdict(summary["plan_followed"], 0.8 - 1e-9, partly=0.5))),
    ]


def scale_gap(cfg: Config) -> str:
    return ("The paper drives ChatGPT with prompts and judges novels of thousands of words by human preference; here "
            f"{'a small word-level GPT-2 trained from scratch on a generated story world (20 names, 10 pets, 10 places)' if cfg.model == 'offline' else cfg.model}, "
            "whose paragraphs are template-like, and an embedding with no model (hashed bag of words) in place of the "
            "paper's sentence-transformer. The check is the mechanism's only: recall of planted facts, one seed.")


def write_results(cfg: Config, ctx: Run, rows: list[dict], note: dict, plan_followed: float, lengths: list[int], context: int,
                  samples: list[str], device) -> None:
    import numpy as np

    from labcli.eval import claims as claims_table
    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import markdown_table

    beyond = [r for r in rows if not r["fact_in_window"]]
    summary = {"paper": PAPER, **note, "context": context, "questions": len(rows), "questions_beyond_window": len(beyond),
               "recall_retrieval": float(np.mean([r["retrieval"] for r in beyond])) if beyond else None,
               "recall_window_only": float(np.mean([r["window_only"] for r in beyond])) if beyond else None,
               "recall_retrieval_all": float(np.mean([r["retrieval"] for r in rows])),
               "fact_retrieved": float(np.mean([r["fact_retrieved"] for r in beyond])) if beyond else None,
               "plan_followed": plan_followed, "mean_text_tokens": float(np.mean(lengths)), "hardware": hardware_line(device)}
    claims = claims_for(cfg, summary)
    summary["claims"] = claims_table.rows(claims)
    ctx.write_summary({**summary, "samples": samples})
    keys = ["context", "questions", "questions_beyond_window", "fact_retrieved", "recall_retrieval", "recall_window_only", "plan_followed",
            "mean_text_tokens"]
    ctx.write_report(f"# lab reproduce recurrentgpt\n\n{PAPER}\n\n" + claims_table.markdown(claims, scale_gap(cfg))
                     + "\n## Numbers\n\n" + markdown_table([{k: summary[k] for k in keys}])
                     + "\nRecall counts questions whose fact lies outside the window the window-only baseline sees.\n\n"
                     + "## A generated text\n\n```\n" + (samples[0] if samples else "") + "\n```\n")
    claims_table.print_claims(claims, "lab reproduce recurrentgpt")
    print(f"recall {summary['recall_retrieval']} with retrieval vs {summary['recall_window_only']} window only "
          f"({len(beyond)} questions beyond the window); plan followed {plan_followed:.3f}; "
          f"{sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold")
