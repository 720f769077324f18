"""A generated E2E-style data-to-text set: restaurant meaning representations -> English sentences.

Like the E2E NLG challenge (Novikova et al. 2017) that LoRA's GPT-2 experiments use: a meaning
representation (MR) such as `name[The Mill], eatType[pub], food[Italian], area[riverside]` is
verbalised into a sentence; each MR has several references, written here by templates with varied
phrasing and slot order. Test MRs use (eatType, food, area) combinations that never occur in
training, so a model must compose phrases it saw separately. Everything is a pure function of the seed.
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


def generate(n_train: int, n_test: int, refs: int, seed: int, test_share: float = 0.2) -> tuple[list[Example], list[Example]]:
    """(train, test): distinct MRs, each with `refs` references; the test MRs' (eatType, food, area)
    combinations are a seeded `test_share` of all combinations, none of which occurs in training."""
    rng = random.Random(seed)
    combos = sorted({(e, f, a) for e in EAT_TYPES for f in FOODS for a in [*AREAS, "-"]})
    held = set(rng.sample(combos, max(1, int(len(combos) * test_share))))
    train, test, seen = [], [], set()
    while len(train) < n_train or len(test) < n_test:
        mr = sample_mr(rng)
        key = linearise(mr)
        if key in seen:
            continue
        side = test if combination(mr) in held else train
        if len(side) >= (n_test if side is test else n_train):
            continue
        seen.add(key)
        side.append(Example(key, [verbalise(mr, rng) for _ in range(refs)]))
    return train, test


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


def collate(pad_id: int):
    """Right-padded batches of finetune_examples (labels padded with -100)."""

    def fn(examples: list[dict]) -> dict:
        n = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), n), pad_id)
        labels = torch.full((len(examples), n), -100)
        mask = torch.zeros((len(examples), n), dtype=torch.long)
        for i, e in enumerate(examples):
            k = len(e["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = e["input_ids"], e["labels"], 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return fn
