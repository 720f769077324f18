"""A small task language for the arms: `home, then reach 0.5 0.1 0.4, then wave`.

Phrases are separated by commas, semicolons or `then`. Each phrase is one of PHRASES; anything
else is rejected with the list of accepted phrases. `--llm MODEL` can turn free text into this
language first (see `text_to_task`); its answer goes through the same parser.

With a scene (`--scene N`), a phrase outside the grammar is an instruction about the scene's
objects ('move above the red cube, avoiding the wall'), grounded by labcli.sims.grounding into a
`goal` step (an end-effector position the expert planner reaches around obstacles); a clause that
starts with 'avoiding' / 'while' / 'without' belongs to the phrase before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from labcli.errors import UserError

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"

PHRASES: dict[str, tuple[str, str]] = {
    # kind: (regex for the arguments, what it does)
    "home": (r"", "home - go to the home pose"),
    "reach": (rf"({NUM})\s+({NUM})\s+({NUM})", "reach X Y Z - move the end effector to X Y Z metres (IK)"),
    "move": (rf"((?:{NUM}\s*)+)", "move Q1 .. Qn - go to these joint angles (rad, one per joint)"),
    "joint": (rf"(\d+)\s+({NUM})", "joint N ANGLE - move joint N (1-based) to ANGLE rad"),
    "wave": (r"(\d+)?", "wave [N] - swing the wrist N times (default 2)"),
    "hold": (rf"({NUM})", "hold S - hold the current target for S seconds"),
}


@dataclass(frozen=True)
class Step:
    kind: str
    args: tuple[float, ...]
    text: str


def accepted() -> str:
    return "; ".join(help_text for _, help_text in PHRASES.values())


CLAUSE = re.compile(r"^(?:avoiding|avoid|while|without|steering)\b")


def parse_task(text: str, n_joints: int | None = None, scene=None, grounder=None) -> list[Step]:
    """Parse a task string into steps, or raise UserError naming the phrase that is not understood.

    `scene`: phrases outside the grammar are grounded in it (`grounder(phrase, scene)`, default
    labcli.sims.grounding.ground) into `goal` steps whose args are the goal's x y z."""
    phrases = [p.strip() for p in re.split(r"\s*(?:,|;|\bthen\b|\band\b)\s*", text.strip().lower()) if p.strip()]
    if not phrases:
        raise UserError("empty --task", f"accepted phrases: {accepted()}")
    if scene is not None:
        merged: list[str] = []
        for phrase in phrases:
            if merged and CLAUSE.match(phrase):
                merged[-1] += ", " + phrase
            else:
                merged.append(phrase)
        phrases = merged
    steps = []
    for phrase in phrases:
        word, _, rest = phrase.partition(" ")
        rest = rest.strip()
        match = re.fullmatch(PHRASES[word][0], rest) if word in PHRASES else None
        if match is None and scene is not None:
            if grounder is None:
                from labcli.sims.grounding import ground as grounder
            steps.append(Step("goal", tuple(float(x) for x in grounder(phrase, scene).goal), phrase))
            continue
        if word not in PHRASES:
            raise UserError(f"unknown task phrase '{phrase}'", f"accepted phrases: {accepted()}; with --scene N, name the scene's objects")
        pattern, help_text = PHRASES[word]
        if match is None:
            raise UserError(f"task phrase '{phrase}' has bad arguments", f"write it as: {help_text}" +
                            ("" if re.search(r"\d", rest) or not rest else "; with --scene N, name the scene's objects"))
        args = tuple(float(x) for g in match.groups() if g for x in g.split())
        if word == "move" and n_joints is not None and len(args) != n_joints:
            raise UserError(f"'{phrase}' gives {len(args)} joint angles, the arm has {n_joints}", f"write {n_joints} numbers after move")
        if word == "joint" and n_joints is not None and not 1 <= args[0] <= n_joints:
            raise UserError(f"'{phrase}': no joint {int(args[0])}", f"joints are numbered 1..{n_joints}")
        if word == "hold" and args[0] < 0:
            raise UserError(f"'{phrase}': negative hold time", "write hold S with S >= 0 seconds")
        steps.append(Step(word, args, phrase))
    return steps


PROMPT = """Translate the instruction into a robot task. Use only these phrases, joined by ", then ":
{phrases}
Instruction: {text}
Task:"""


def text_to_task(text: str, model_path: str) -> str:
    """Ask a local causal LM (a folder on disk; nothing is downloaded) to write the task string."""
    from pathlib import Path

    if not Path(model_path).is_dir():
        raise UserError(f"--llm {model_path}: no such model folder", "pass a local transformers model folder, or write --task in the task language")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True)
    prompt = PROMPT.format(phrases="\n".join(h for _, h in PHRASES.values()), text=text)
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=48, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return answer.strip().splitlines()[0] if answer.strip() else ""
