from labcli.data import gsm8k


def test_counts_answers_and_annotations_removed():
    train, test = gsm8k.read("train"), gsm8k.read("test")
    assert (len(train), len(test)) == (7473, 1319)
    assert test[0]["answer"] == 18.0 and test[0]["question"].startswith("Janet")
    assert all(r["steps"] and "<<" not in " ".join(r["steps"]) for r in test)
