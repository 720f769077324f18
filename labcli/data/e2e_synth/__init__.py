"""A generated E2E-style data-to-text set: restaurant meaning representations -> English sentences.

Like the E2E NLG challenge (Novikova et al. 2017) that LoRA's GPT-2 experiments use: a meaning
representation (MR) such as `name[The Mill], eatType[pub], food[Italian], area[riverside]` is
verbalised into a sentence; each MR has several references, written here by templates with varied
phrasing and slot order. Dev and test MRs use (eatType, food, area) combinations that never occur
in training (nor in each other), so a model must compose phrases it saw separately; settings are
chosen on dev, results reported on test. Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

NAMES = ["The Eagle", "The Mill", "Blue Spice", "The Golden Curry", "Aromi", "The Punter", "Zizzi", "Cotto",
         "Green Man", "The Vaults", "Fitzbillies", "Strada", "The Wrestlers", "Alimentum", "Bibimbap House",
         "The Phoenix", "Loch Fyne", "Wildwood", "Taste of Cambridge", "Clowns", "The Cricketers", "Giraffe",
         "The Olive Grove", "Midsummer House", "The Rice Boat", "Browns Cambridge", "The Waterman", "Travellers Rest Beefeater"]
EAT_TYPES = ["restaurant", "pub", "coffee shop"]
FOODS = ["English", "Italian", "French", "Chinese", "Indian", "Japanese", "fast food"]
PRICES = {"cheap": ["cheap", "low-priced", "inexpensive"], "moderate": ["moderately priced", "mid-priced", "average-priced"],
          "high": ["expensive", "high-priced", "pricey"]}
RATINGS = {"low": ["a low customer rating", "poor reviews", "a rating of 1 out of 5"],
           "average": ["an average customer rating", "average reviews", "a rating of 3 out of 5"],
           "high": ["a high customer rating", "excellent reviews", "a rating of 5 out of 5"]}
AREAS = {"city centre": ["in the city centre", "in the centre of the city", "downtown"],
         "riverside": ["by the riverside", "on the river", "near the river"]}
NEAR = ["Burger King", "Café Rouge", "The Bakers", "Raja Indian Cuisine", "Express by Holiday Inn", "Crowne Plaza Hotel",
        "The Portland Arms", "Avalon", "Rainbow Vegetarian Café", "All Bar One"]
SLOTS = ["name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near"]


@dataclass
class Example:
    mr: str  # "name[...], eatType[...], ..."
    references: list[str]  # several verbalisations of the same MR


def sample_mr(rng: random.Random) -> dict:
    """name and eatType always; each other slot present with probability 0.6."""
    mr = {"name": rng.choice(NAMES), "eatType": rng.choice(EAT_TYPES), "food": rng.choice(FOODS)}
    for slot, values in (("priceRange", list(PRICES)), ("customer rating", list(RATINGS)), ("area", list(AREAS)),
                         ("familyFriendly", ["yes", "no"]), ("near", NEAR)):
        if rng.random() < 0.6:
            mr[slot] = rng.choice(values)
    return mr


def combination(mr: dict) -> tuple:
    """What the split holds out: the (eatType, food, area) combination."""
    return mr["eatType"], mr["food"], mr.get("area", "-")


def linearise(mr: dict) -> str:
    return ", ".join(f"{slot}[{mr[slot]}]" for slot in SLOTS if slot in mr)


def verbalise(mr: dict, rng: random.Random) -> str:
    """One reference: a head clause, then the other slots as clauses in a random order."""
    food = mr["food"]
    article = "an" if mr["eatType"][0] in "aeiou" else "a"
    head = rng.choice([f"{mr['name']} is {article} {mr['eatType']} serving {food} food",
                       f"{mr['name']} is {article} {food} {mr['eatType']}",
                       f"There is {article} {mr['eatType']} called {mr['name']} that serves {food} food"])
    clauses = []
    if "priceRange" in mr:
        clauses.append(rng.choice(["it is {}", "prices are {}", "it is {} to eat there"]).format(rng.choice(PRICES[mr["priceRange"]])))
    if "customer rating" in mr:
        clauses.append(rng.choice(["it has {}", "customers give it {}", "it gets {}"]).format(rng.choice(RATINGS[mr["customer rating"]])))
    if "area" in mr:
        clauses.append(rng.choice(["it is located {}", "you can find it {}", "it is {}"]).format(rng.choice(AREAS[mr["area"]])))
    if "familyFriendly" in mr:
        clauses.append(rng.choice(["it is family friendly", "children are welcome", "it is kid friendly"])
                       if mr["familyFriendly"] == "yes" else
                       rng.choice(["it is not family friendly", "children are not welcome", "it is adults only"]))
    if "near" in mr:
        clauses.append(rng.choice(["it is near {}", "it is close to {}", "it is not far from {}"]).format(mr["near"]))
    rng.shuffle(clauses)
    text = head
    for clause in clauses:
        text += " and " + clause if rng.random() < 0.4 else ". " + clause[0].upper() + clause[1:]
    return text + "."


@dataclass
class Split:
    train: list[Example]
    dev: list[Example]  # for choosing settings (learning rate, steps): never the test MRs
    test: list[Example]


def generate(n_train: int, n_dev: int, n_test: int, refs: int, seed: int, held_share: float = 0.2) -> Split:
    """Distinct MRs, each with `refs` references. The (eatType, food, area) combinations are split
    three ways by the seed: a `held_share` of them only in dev, another `held_share` only in test, the
    rest only in training; so dev, like test, asks for combinations never seen in training."""
    rng = random.Random(seed)
    combos = sorted({(e, f, a) for e in EAT_TYPES for f in FOODS for a in [*AREAS, "-"]})
    k = max(1, int(len(combos) * held_share))
    held = rng.sample(combos, 2 * k)
    side_of = {c: "dev" for c in held[:k]} | {c: "test" for c in held[k:]}
    want = {"train": n_train, "dev": n_dev, "test": n_test}
    out = {name: [] for name in want}
    seen = set()
    while any(len(out[name]) < n for name, n in want.items()):
        mr = sample_mr(rng)
        key = linearise(mr)
        side = side_of.get(combination(mr), "train")
        if key in seen or len(out[side]) >= want[side]:
            continue
        seen.add(key)
        out[side].append(Example(key, [verbalise(mr, rng) for _ in range(refs)]))
    return Split(**out)


def prompt(mr: str) -> str:
    return f"{mr} =>"


def finetune_examples(examples: list[Example], tokenizer) -> list[dict]:
    """One causal-LM example per (MR, reference): the prompt's labels are -100 (only the sentence is scored)."""
    out = []
    for ex in examples:
        p = tokenizer(prompt(ex.mr), add_special_tokens=False)["input_ids"]
        for ref in ex.references:
            t = tokenizer(" " + ref, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            out.append({"input_ids": torch.tensor(p + t), "labels": torch.tensor([-100] * len(p) + t)})
    return out
