"""The knowledge graph: facts in and out, typed nodes, and precision/recall against a true set."""

from __future__ import annotations

import pytest

from labcli.rl.kg import KnowledgeGraph, pooled, precision_recall


def test_facts_relations_and_types():
    kg = KnowledgeGraph([("key", "in", "chest"), ("chest", "at", "attic"), ("chest", "is", "locked")], {"chest": "container"})
    kg.add("key", "in", "chest")  # a fact is stored once
    assert len(kg) == 3 and ("chest", "is", "locked") in kg
    assert kg.value("chest", "at") == "attic" and kg.subjects("in", "chest") == ["key"] and kg.type_of("chest") == "container"
    kg.discard_where(lambda f: f[1] != "is")
    assert kg.facts() == {("key", "in", "chest"), ("chest", "at", "attic")}
    assert kg.to_text() == "chest | at | attic\nkey | in | chest"


def test_precision_recall_and_pooling():
    true = {("a", "at", "r"), ("b", "at", "r"), ("c", "in", "a")}
    score = precision_recall({("a", "at", "r"), ("c", "in", "b")}, true)
    assert score["precision"] == 0.5 and score["recall"] == pytest.approx(1 / 3)
    assert precision_recall(set(), set())["f1"] == 1.0
    both = pooled([score, precision_recall(true, true)])  # counts are summed, not ratios averaged
    assert both["precision"] == pytest.approx(4 / 5) and both["recall"] == pytest.approx(4 / 6)
