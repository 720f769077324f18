"""The generated E2E-style set: held-out combinations, references, label masking."""

from labcli.data import e2e_synth


def test_dev_and_test_mrs_use_only_combinations_unseen_in_training_and_in_each_other():
    split = e2e_synth.generate(300, 40, 60, 3, seed=0)

    def combos(examples):
        out = set()
        for e in examples:
            slots = dict(part[:-1].split("[", 1) for part in e.mr.split(", "))
            out.add((slots["eatType"], slots["food"], slots.get("area", "-")))
        return out

    assert (len(split.train), len(split.dev), len(split.test)) == (300, 40, 60)
    train, dev, test = combos(split.train), combos(split.dev), combos(split.test)
    assert not train & dev and not train & test and not dev & test
    assert len({e.mr for e in split.train + split.dev + split.test}) == 400  # distinct MRs
    assert all(len(e.references) == 3 and e.references[0].startswith(("There", *e2e_synth.NAMES)) for e in split.train)
    assert e2e_synth.generate(300, 40, 60, 3, seed=0).test[0] == split.test[0]


def test_only_the_sentence_is_scored():
    from labcli.models.tokenizer import train_tokenizer

    train = e2e_synth.generate(20, 5, 5, 1, seed=1).train
    tok = train_tokenizer([e.mr for e in train] + [e.references[0] for e in train], 300)
    ex = e2e_synth.finetune_examples(train[:1], tok)[0]
    n_prompt = len(tok(e2e_synth.prompt(train[0].mr), add_special_tokens=False)["input_ids"])
    assert (ex["labels"][:n_prompt] == -100).all() and (ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]).all()
