"""The generated E2E-style set: held-out combinations, references, label masking."""

from labcli.data import e2e_synth


def test_test_mrs_use_only_combinations_unseen_in_training():
    train, test = e2e_synth.generate(300, 60, 3, seed=0)
    def combo(mr: str):
        slots = dict(part[:-1].split("[", 1) for part in mr.split(", "))
        return slots["eatType"], slots["food"], slots.get("area", "-")
    assert len(train) == 300 and len(test) == 60
    assert not {combo(e.mr) for e in test} & {combo(e.mr) for e in train}
    assert all(len(e.references) == 3 and e.references[0].startswith(("There", *e2e_synth.NAMES)) for e in train)
    assert e2e_synth.generate(300, 60, 3, seed=0)[1][0] == test[0]


def test_only_the_sentence_is_scored():
    from labcli.models.tokenizer import train_tokenizer

    train, _ = e2e_synth.generate(20, 5, 1, seed=1)
    tok = train_tokenizer([e.mr for e in train] + [e.references[0] for e in train], 300)
    ex = e2e_synth.finetune_examples(train[:1], tok)[0]
    n_prompt = len(tok(e2e_synth.prompt(train[0].mr), add_special_tokens=False)["input_ids"])
    assert (ex["labels"][:n_prompt] == -100).all() and (ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]).all()
