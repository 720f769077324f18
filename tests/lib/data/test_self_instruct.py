"""The shipped Self-Instruct files: 175 seed tasks (26 classification) and 252 user-oriented instructions."""

from labcli.data import self_instruct


def test_counts_and_fields():
    seeds = self_instruct.seed_tasks()
    assert len(seeds) == 175 and sum(t["is_classification"] for t in seeds) == 26
    assert all(t["instruction"].strip() and t["instances"] and "output" in t["instances"][0] for t in seeds)
    users = self_instruct.user_oriented()
    assert len(users) == 252 and all(t["instruction"].strip() for t in users)
    assert (self_instruct.FOLDER / "LICENSE").read_text().lstrip().startswith("Apache License")
