from labcli.data import strategyqa


def test_train_and_dev_files_with_boolean_answers():
    train, test = strategyqa.read("train"), strategyqa.read("test")
    assert (len(train), len(test)) == (2061, 229)
    assert {r["answer"] for r in test} == {True, False} and all(r["facts"] for r in train)
