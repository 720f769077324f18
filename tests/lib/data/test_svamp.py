from labcli.data import svamp


def test_fixed_700_300_split_of_the_1000_problems():
    train, test = svamp.read("train"), svamp.read("test")
    assert (len(train), len(test)) == (700, 300)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert train == svamp.read("train")  # seeded, not random per call
    assert all(isinstance(r["answer"], float) and r["equation"] for r in train)
