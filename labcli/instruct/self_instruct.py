"""The Self-Instruct bootstrap (Wang et al. 2023), with the reference code's prompts, sampling and
filters (github.com/yizhongw/self-instruct, self_instruct/*.py), re-implemented here:

1. instruction generation: prompts of 8 instructions (2 sampled from those generated so far, the
   rest from the 175 seeds), shuffled, numbered, ending with "9."; temperature 0.7, top_p 0.5,
   presence_penalty 2, stop at "\\n\\n" / "\\n16" / "16." / "16 ."; a reply cut by max_tokens is
   dropped whole; each instruction kept only if it has 4-150 words, none of the blacklisted words
   (image, graph, picture, file, map, draw, plot, go to, ...), does not start with "Write a
   program", punctuation or a non-ASCII character, and its ROUGE-L F1 with every seed and kept
   instruction is <= 0.7.
2. classification or not: a few-shot Yes/No question per instruction.
3. instances: classification tasks output first ("Class label: ..." then the input), the others
   input first ("Example k / Input: / Output:"), greedy; parsed and filtered like the reference's
   prepare_for_finetuning (no empty output, input != output, nothing ending in ":", a task whose
   same input gets two outputs is dropped, duplicates removed, at most 5 instances per task).

The few-shot prompts of steps 2 and 3 are written here from the shipped seed tasks (the reference
uses hand-written prompt files of the same shape).
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field

from labcli.instruct.rouge import RougeIndex

BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to"]
ROUGE_MAX = 0.7
INSTRUCTION_SAMPLING = dict(temperature=0.7, top_p=0.5, presence_penalty=2.0)
INSTRUCTION_STOP = ["\n\n", "\n16", "16.", "16 ."]
CLF_HEADER = "Come up with a series of classification tasks. Try to specify the possible output labels when possible.\n"
GEN_HEADER = "Come up with a series of tasks:\n"
CUT = "reply cut by max_tokens"  # counts replies, not instructions


def encode_prompt(instructions: list[str], classification: bool = False) -> str:
    """The bootstrap prompt: the header, the instructions numbered 1..k, then "k+1."."""
    prompt = CLF_HEADER if classification else GEN_HEADER
    for i, inst in enumerate(instructions):
        inst = re.sub(r"\s+", " ", inst).strip().rstrip(":")
        prompt += f"{i + 1}. {inst}\n"
    return prompt + f"{len(instructions) + 1}."


def _has_word(word: str, text: str) -> bool:
    return re.search(rf"\b({word})\b", text, flags=re.IGNORECASE) is not None


def rejection_reason(inst: str) -> str | None:
    """Which of the reference's lexical filters drops an (already normalised) instruction, if any."""
    if inst == "":
        return "empty"
    words = len(inst.split())
    if words <= 3:
        return "too short (<4 words)"
    if words > 150:
        return "too long (>150 words)"
    if any(_has_word(w, inst) for w in BLACKLIST):
        return "blacklisted word"
    if inst.startswith("Write a program"):
        return "'Write a program'"
    if inst[0] in string.punctuation:
        return "starts with punctuation"
    if not inst[0].isascii():
        return "starts non-ASCII"
    return None


def split_instructions(text: str, finish_reason: str) -> tuple[list[str], Counter]:
    """The reference's post-processing of one reply: (kept instructions, rejections by reason)."""
    rejected: Counter = Counter()
    if finish_reason == "length":
        rejected[CUT] += 1
        return [], rejected
    kept = []
    for raw in re.split(r"\n\d+\s?\. ", text):
        inst = re.sub(r"\s+", " ", raw).strip().capitalize()
        reason = rejection_reason(inst)
        if reason is None:
            kept.append(inst)
        elif reason != "empty":
            rejected[reason] += 1
    return kept, rejected


@dataclass
class BootstrapResult:
    instructions: list[dict]  # {"instruction", "most_similar", "rouge_l", "round"}
    rejected: Counter = field(default_factory=Counter)
    rounds: int = 0
    requests: int = 0
    candidates: int = 0  # instructions split from replies; = kept + every rejection but CUT
    candidate_rouge: list[float] = field(default_factory=list)  # max ROUGE-L of each lexically valid candidate
    exact_lcs_calls: int = 0


def bootstrap(teacher, seeds: list[str], target: int, *, rng: random.Random, batch_size: int = 5,
              num_prompt_instructions: int = 8, classification: bool = False, max_tokens: int = 1024,
              max_rounds: int = 1000, on_round=None) -> BootstrapResult:
    """Generate until `target` instructions are kept or `max_rounds` batches of requests were sent."""
    index = RougeIndex(seeds)
    res = BootstrapResult([])
    machine: list[str] = []
    while len(machine) < target and res.rounds < max_rounds:
        prompts = []
        for _ in range(batch_size):
            shown = rng.sample(machine, min(2, len(machine)))
            shown += rng.sample(seeds, num_prompt_instructions - len(shown))
            rng.shuffle(shown)
            prompts.append(encode_prompt(shown, classification))
        replies = teacher.complete(prompts, max_tokens=max_tokens, stop=INSTRUCTION_STOP, **INSTRUCTION_SAMPLING)
        res.requests += len(prompts)
        for reply in replies:
            kept, rejected = split_instructions(reply.text, reply.finish_reason)
            res.rejected.update(rejected)
            res.candidates += len(kept) + sum(v for k, v in rejected.items() if k != CUT)
            for inst in kept:
                if len(machine) >= target:
                    res.rejected["not needed (target reached)"] += 1
                    continue
                score, arg, tokens = index.best(inst)
                res.candidate_rouge.append(score)
                if score > ROUGE_MAX:
                    res.rejected[f"ROUGE-L > {ROUGE_MAX}"] += 1
                    continue
                res.instructions.append({"instruction": inst, "most_similar": index.texts[arg] if arg >= 0 else None,
                                         "rouge_l": round(score, 4), "round": res.rounds})
                machine.append(inst)
                index.add(inst, tokens)
        res.rounds += 1
        if on_round:
            on_round(res)
    res.exact_lcs_calls = index.exact_calls
    return res


# ---------------------------------------------------------------- step 2: classification or not

CLF_QUESTION = "Can the following task be regarded as a classification task with finite output labels?\n\n"


def clf_prompt(instruction: str, shots: list[dict]) -> str:
    body = "".join(f"Task: {s['instruction'].strip()}\nIs it classification? {'Yes' if s['is_classification'] else 'No'}\n\n"
                   for s in shots)
    return CLF_QUESTION + body + f"Task: {instruction.strip()}\nIs it classification?"


def clf_shots(seed_tasks: list[dict], rng: random.Random, k: int = 12) -> list[dict]:
    """k seed tasks, half classification, in a seeded order."""
    yes = [t for t in seed_tasks if t["is_classification"]]
    no = [t for t in seed_tasks if not t["is_classification"]]
    shots = rng.sample(yes, k // 2) + rng.sample(no, k - k // 2)
    rng.shuffle(shots)
    return shots


def parse_is_classification(reply: str) -> bool:
    return reply.strip() in ("Yes", "yes", "YES")


# ---------------------------------------------------------------- step 3: instances

def instance_prompt(instruction: str, classification: bool, shots: list[dict]) -> str:
    """Output-first (classification) or input-first (the rest) few-shot prompt from seed tasks."""
    parts = []
    for s in shots + [{"instruction": instruction, "instances": None}]:
        text = f"Task: {s['instruction'].strip()}\n"
        for k, inst in enumerate(s["instances"] or []):
            if classification:
                text += f"Class label: {inst['output'].strip()}\n{inst['input'].strip()}\n"
            else:
                text += f"Example {k + 1}\n" + (f"Input: {inst['input'].strip()}\n" if inst["input"].strip() else "")
                text += f"Output: {inst['output'].strip()}\n"
        parts.append(text)
    parts[-1] += instance_primer(classification)
    if classification:
        header = "Given the classification task definition and the class labels, generate an input for each class label.\n\n"
    else:
        header = "Come up with examples for the following tasks. Try to generate multiple examples when possible.\n\n"
    return header + "\n".join(parts)


def instance_shots(seed_tasks: list[dict], classification: bool, rng: random.Random, k: int = 3) -> list[dict]:
    pool = [t for t in seed_tasks if t["is_classification"] == classification]
    return rng.sample(pool, k)


def instance_primer(classification: bool) -> str:
    """The start of the expected reply, written at the end of the prompt (and put back before parsing):
    the reference's prompts end at "Task: ...\\n"; a primer keeps small teachers on the format."""
    return "Class label:" if classification else "Example 1\n"


def parse_input_output(text: str) -> tuple[str, str]:
    if re.findall(r"Output\s*\d*\s*:", text):
        parts = re.split(r"Output\s*\d*\s*:", text)
        inp, out = parts[0].strip(), parts[1].strip()
    else:
        inp, out = "", text.strip()
    if re.findall(r"Input\s*\d*\s*:", out):  # several pairs in one: keep the first output
        out = re.split(r"Input\s*\d*\s*:", out)[0].strip()
    return re.sub(r"^Input\s*\d*\s*:", "", inp).strip(), out


def filter_invalid(instances: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [i for i in instances if i[1] != i[2] and i[2] != "" and not i[1].strip().endswith(":")
            and not i[2].strip().endswith(":")]


def filter_duplicates(instances: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """No instances at all when one non-empty input has two outputs; else duplicates removed (first kept)."""
    for i in range(1, len(instances)):
        for j in range(i):
            if instances[i][1] != "" and instances[i][1] == instances[j][1] and instances[i][2] != instances[j][2]:
                return []
    return list(dict.fromkeys(instances))


def parse_generation_instances(raw: str, instruction: str, finish_reason: str) -> list[tuple[str, str, str]]:
    raw = raw.strip()
    if re.findall(r"Example\s?\d*\.?", raw):
        chunks = [c.strip() for c in re.split(r"Example\s?\d*\.?", raw) if c.strip()]
        instances = [(instruction.strip(), *map(str.strip, parse_input_output(c))) for c in chunks]
    elif re.findall(r"Output\s*\d*\s*:", raw):
        instances = [(instruction.strip(), *map(str.strip, parse_input_output(raw)))]
    else:
        return []
    if finish_reason == "length":
        instances = instances[:-1]
    return filter_duplicates(filter_invalid(instances))


def parse_classification_instances(raw: str, instruction: str, finish_reason: str) -> list[tuple[str, str, str]]:
    if "Class label:" not in raw:
        return []
    instances = []
    for chunk in raw.split("Class label:")[1:]:
        fields = chunk.strip().split("\n", 1)
        label = fields[0].strip()
        inp = fields[1].strip() if len(fields) == 2 else ""
        instances.append((instruction.strip(), inp, label))
    if finish_reason == "length":
        instances = instances[:-1]
    return filter_duplicates(filter_invalid(instances))


# ---------------------------------------------------------------- statistics

STOPWORDS = {"a", "an", "the", "of", "to", "for", "in", "on", "with", "and", "or", "me", "you", "your", "my", "this",
             "that", "these", "those", "some", "any", "each", "every", "all", "it", "its", "if", "is", "are", "be",
             "from", "by", "as", "at", "about", "given", "following", "what", "which", "how", "why", "who", "whether"}


def verb_noun(instruction: str) -> tuple[str, str]:
    """(first word, first content word after it), lowercased: a parser-free stand-in for the paper's
    root verb and its direct object (the paper used the Berkeley Neural Parser)."""
    words = re.findall(r"[A-Za-z']+", instruction.lower())
    if not words:
        return "", ""
    noun = next((w for w in words[1:] if w not in STOPWORDS), "")
    return words[0], noun
