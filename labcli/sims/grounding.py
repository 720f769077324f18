"""Plain-English instructions grounded in a scene: 'go to the left of the blue bowl, avoiding the wall'.

`ground(text, scene)` maps an instruction to a goal for the end effector: the target object's
position plus the relation's offset (in the robot's front frame: 'left' is the robot's left,
'behind' further from the robot, 'in front of' nearer), at the scene's travel height, and the
obstacles it names to avoid. It grounds every word or refuses: one `UserError` line names what it
could not ground (an unknown word, an object the scene does not have, an ambiguous reference, a
negation, a side it cannot pick) and lists what the scene has.

`lm_propose(text, scene, lm)` is the optional language-model path: a local or hub causal LM, or an
OpenAI-compatible endpoint (`http://host:port/v1`), proposes the goal as JSON
({"target": ..., "relation": ..., "avoid": [...]}); `validate_proposal` checks it against the scene
(the object must exist, the relation must be one of RELATIONS) and grounds it with the same code.
Nothing the LM writes is executed unchecked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np

from labcli.errors import UserError
from labcli.sims.scene import COLOURS, LAYOUTS, Scene, Thing, footprint, front_axes

# relation -> (forward, left) unit offset in the robot's front frame
RELATIONS: dict[str, tuple[float, float]] = {
    "above": (0.0, 0.0), "left": (0.0, 1.0), "right": (0.0, -1.0), "front": (-1.0, 0.0), "behind": (1.0, 0.0),
}
BESIDE_GAP = 0.06  # m between an object's footprint and a goal beside it

SHAPE_WORDS = {"cube": "cube", "block": "cube", "box": "cube", "ball": "ball", "sphere": "ball",
               "cylinder": "cylinder", "can": "cylinder", "bowl": "bowl", "dish": "bowl"}
SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
OBSTACLE_WORDS = {"wall": "wall", "pillar": "pillar", "post": "pillar", "column": "pillar", "obstacle": None}
RELATION_WORDS = {"above": "above", "over": "above", "top": "above", "left": "left", "right": "right", "front": "front",
                  "behind": "behind", "beyond": "behind"}
VERBS = {"move", "go", "reach", "hover", "head", "bring", "put", "position", "get", "travel", "take", "navigate"}
FILLER = {"the", "a", "an", "to", "of", "your", "its", "gripper", "hand", "arm", "end", "effector", "tool", "tip",
          "robot", "please", "now", "side", "on", "in", "at", "just", "spot", "point", "toward", "towards", "one",
          "object", "thing", "then", "so", "it", "is", "that", "there", "and", "going", "moving", "passing", "while", "by"}
AVOID_MARKERS = r"\b(?:while avoiding|avoiding|avoid|around|without hitting|without touching|steering clear of|clear of|away from)\b"
AVOID_FILLER = {"the", "a", "an", "any", "and", "hitting", "touching", "it"}
NEGATIONS = {"not", "don't", "dont", "never", "no", "nor", "without"}
UNSUPPORTED = {"pick": "the arms have no gripper: they move the end effector (move / go / reach)",
               "grab": "the arms have no gripper: they move the end effector (move / go / reach)",
               "push": "pushing is not grounded: say where the end effector should go",
               "next": "'next to' does not say which side: use left of / right of / in front of / behind",
               "beside": "'beside' does not say which side: use left of / right of / in front of / behind",
               "near": "'near' does not say where: use above / left of / right of / in front of / behind",
               "between": "'between' two objects is not grounded: name one object and one side",
               "under": "below the travel height is not reachable without hitting the table: use above",
               "below": "below the travel height is not reachable without hitting the table: use above"}

VOCAB = sorted(set(COLOURS) | set(SHAPE_WORDS) | set(SIZE_WORDS) | {w for w in OBSTACLE_WORDS} | set(RELATION_WORDS)
               | VERBS | FILLER | AVOID_FILLER | {"while", "avoiding", "avoid", "around", "without", "steering", "clear", "away", "from"})


@dataclass
class Grounding:
    """What an instruction means in a scene: the end-effector goal and what to steer around."""

    text: str
    goal: np.ndarray  # world xyz (m)
    target: str  # the object's name
    relation: str  # a RELATIONS key
    avoid: list[str] = field(default_factory=list)  # obstacle names the instruction mentions

    def describe(self) -> str:
        where = "above" if self.relation == "above" else f"{'in front of' if self.relation == 'front' else self.relation + (' of' if self.relation in ('left', 'right') else '')}"
        avoid = f", avoiding the {' and the '.join(self.avoid)}" if self.avoid else ""
        return f"{where} the {self.target}{avoid} -> goal {np.round(self.goal, 3).tolist()} m"


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def refuse(what: str, text: str, why: str, scene: Scene) -> UserError:
    example = scene.objects[0].name if scene.objects else "red cube"
    return UserError(f"could not ground '{what}' in '{text}': {why}",
                     f"the scene has {scene.describe()}; say e.g. 'move above the {example}', "
                     f"'go to the left of the {example}', '..., avoiding the {scene.obstacles[0].kind if scene.obstacles else 'wall'}'")


def ground(text: str, scene: Scene) -> Grounding:
    """Ground one instruction in `scene`, or raise UserError naming what could not be grounded."""
    clean = text.strip().rstrip(".!").strip()
    if not clean:
        raise UserError("empty instruction", "say where the end effector should go, e.g. 'move above the red cube'")
    words = tokens(clean)
    negated = [w for w in tokens(re.sub(r"\bwithout (?:hitting|touching)\b", " ", clean.lower())) if w in NEGATIONS]
    if negated:
        raise refuse(negated[0], clean, "negated instructions are not grounded (say where to go, not where not to go)", scene)
    for w in words:
        if w in UNSUPPORTED:
            raise refuse(w, clean, UNSUPPORTED[w], scene)
    parts = re.split(AVOID_MARKERS, clean.lower(), maxsplit=1)
    main, avoid_part = parts[0], (parts[1] if len(parts) > 1 else None)
    target, relation = ground_target(main, clean, scene)
    avoid = ground_avoid(avoid_part, clean, scene) if avoid_part is not None else []
    return Grounding(clean, goal_for(scene, target, relation), target.name, relation, avoid)


def ground_target(main: str, text: str, scene: Scene) -> tuple[Thing, str]:
    words = tokens(main)
    relations, colours, shapes, sizes, obstacles, unknown = [], [], [], [], [], []
    for w in words:
        if w in RELATION_WORDS:
            relations.append(RELATION_WORDS[w])
        elif w in COLOURS:
            colours.append(w)
        elif w in SHAPE_WORDS:
            shapes.append(SHAPE_WORDS[w])
        elif w in SIZE_WORDS:
            sizes.append(SIZE_WORDS[w])
        elif w in OBSTACLE_WORDS:
            obstacles.append(w)
        elif w not in VERBS and w not in FILLER:
            unknown.append(w)
    if unknown:
        raise refuse(" ".join(unknown), text, f"unknown word{'s' if len(unknown) > 1 else ''} (known: colours, shapes, "
                     "sizes, above / left of / right of / in front of / behind, avoiding the wall / pillar)", scene)
    if len(set(relations)) > 1:
        raise refuse(" and ".join(dict.fromkeys(relations)), text, "more than one relation for one target", scene)
    if obstacles and not (colours or shapes or sizes):
        raise refuse(f"the {obstacles[0]}", text, "obstacles are steered around, not reached: name an object", scene)
    for kind, found in (("colours", colours), ("shapes", shapes), ("sizes", sizes)):
        if len(set(found)) > 1:
            raise refuse(" ".join(found), text, f"two {kind} for one target", scene)
    if not (colours or shapes or sizes):
        raise refuse(main.strip(), text, "no object named (say its colour and/or shape)", scene)
    want = " ".join(x for x in (sizes[:1] + colours[:1] + shapes[:1]))
    matches = [t for t in scene.objects if (not colours or t.colour == colours[0]) and (not shapes or t.kind == shapes[0])
               and (not sizes or t.size_word == sizes[0])]
    if not matches:
        raise refuse(f"the {want}", text, f"no {want} in the scene", scene)
    if len(matches) > 1:
        raise refuse(f"the {want}", text, f"ambiguous: {' / '.join(t.name for t in matches)} all match", scene)
    return matches[0], relations[0] if relations else "above"


def ground_avoid(part: str, text: str, scene: Scene) -> list[str]:
    names, unknown = [], []
    for w in tokens(part):
        if w in OBSTACLE_WORDS:
            kind = OBSTACLE_WORDS[w]
            found = [o for o in scene.obstacles if kind is None or o.kind == kind]
            if not found:
                raise refuse(f"the {w}", text, f"the scene has no {w} to avoid", scene)
            names += [o.name for o in found if o.name not in names]
        elif w not in AVOID_FILLER:
            unknown.append(w)
    if unknown:
        raise refuse(" ".join(unknown), text, "only the scene's obstacles (wall / pillar / obstacle) can be avoided", scene)
    if not names:
        raise refuse(part.strip() or "avoiding", text, "say what to avoid (the wall / the pillar / the obstacle)", scene)
    return names


def goal_for(scene: Scene, target: Thing, relation: str) -> np.ndarray:
    """The end-effector goal: above the object, or beside it on the relation's side, at travel height."""
    layout = LAYOUTS[scene.arm]
    fwd, left = front_axes(layout)
    du, dv = RELATIONS[relation]
    reach = footprint(target) + BESIDE_GAP if relation != "above" else 0.0
    xy = np.array(target.pos[:2]) + reach * (du * fwd + dv * left)
    return np.array([xy[0], xy[1], layout.travel_z])


# ----------------------------------------------------------------------------- the LM path

LM_PROMPT = """You control a robot arm above a table. Objects on the table: {objects}. Obstacles: {obstacles}.
Turn the instruction into JSON with keys "target" (one object name from the list, exactly as written),
"relation" (one of: above, left, right, front, behind) and "avoid" (a list of obstacle names, may be empty).
Answer with the JSON only.
Instruction: {text}
JSON:"""


def lm_prompt(text: str, scene: Scene) -> str:
    return LM_PROMPT.format(objects=", ".join(t.name for t in scene.objects),
                            obstacles=", ".join(t.name for t in scene.obstacles) or "none", text=text)


def validate_proposal(answer: str, text: str, scene: Scene) -> Grounding:
    """Check an LM's JSON answer against the scene and ground it; UserError (one line) when it does not hold."""
    found = re.search(r"\{.*?\}", answer, re.S)
    short = " ".join(answer.split())[:80]
    if not found:
        raise UserError(f"the LM's answer '{short}' has no JSON goal", "use a stronger instruction-following model, or drop --lm to use the grounded parser")
    try:
        obj = json.loads(found.group(0))
    except json.JSONDecodeError as exc:
        raise UserError(f"the LM's answer '{short}' is not valid JSON ({exc.msg})", "use a stronger model, or drop --lm") from None
    if not isinstance(obj, dict):
        raise UserError(f"the LM's answer '{short}' is not a JSON object", "use a stronger model, or drop --lm")
    names = {t.name: t for t in scene.objects}
    proposed = " ".join(str(obj.get("target", "")).lower().split())
    target = names.get(proposed)
    if target is None:
        raise UserError(f"the LM proposed target '{proposed}', which is not in the scene", f"objects: {', '.join(names)}")
    relation = " ".join(str(obj.get("relation", "above")).lower().split())
    if relation not in RELATIONS:
        raise UserError(f"the LM proposed relation {relation!r}", f"one of: {', '.join(RELATIONS)}")
    avoid = obj.get("avoid") or []
    obstacles = {t.name: t for t in scene.obstacles}
    avoid = [" ".join(str(a).lower().split()) for a in avoid] if isinstance(avoid, list) else [str(avoid)]
    if any(a not in obstacles for a in avoid):
        raise UserError(f"the LM proposed to avoid {avoid}, not the scene's obstacles", f"obstacles: {', '.join(obstacles) or 'none'}")
    return Grounding(text, goal_for(scene, target, relation), target.name, relation, avoid)


def lm_propose(text: str, scene: Scene, lm: str, model_name: str = "default", max_new_tokens: int = 64) -> tuple[Grounding, str]:
    """Ask an LM for the goal as JSON and validate it; returns the grounding and the raw answer."""
    prompt = lm_prompt(text, scene)
    answer = ask_endpoint(lm, model_name, prompt) if re.match(r"https?://", lm) else ask_local_lm(lm, prompt, max_new_tokens)
    return validate_proposal(answer, text, scene), answer


def ask_endpoint(url: str, model_name: str, prompt: str, timeout: float = 60.0) -> str:
    """One chat completion from an OpenAI-compatible server (`URL` ends in /v1)."""
    import urllib.error
    import urllib.request

    body = json.dumps({"model": model_name, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                       "max_tokens": 128}).encode()
    request = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read().decode())
        return str(reply["choices"][0]["message"]["content"])
    except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as exc:
        raise UserError(f"--lm {url}: no chat completion ({exc})", "start an OpenAI-compatible server there, or drop --lm") from None


def ask_local_lm(name: str, prompt: str, max_new_tokens: int) -> str:
    """Greedy completion from a causal LM: a local folder, or a hub id already in the cache (offline)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UserError(f"--lm {name}: cannot load a causal LM ({str(exc).splitlines()[0][:120]})",
                        "pass a local model folder, a cached hub id, or an http://host:port/v1 endpoint") from None
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
