"""A typed knowledge graph of (subject, relation, object) facts, kept in a networkx MultiDiGraph.

Both environment families write their state here: `labcli.rl.envs.textworld` extracts facts from
TextWorld's text and translates the game's own (true) facts into the same vocabulary;
`labcli.rl.envs.babyai` reads them off the MiniGrid grid. Planners search over the graph, the graph
encoder (`labcli.rl.agents.nets`) attends over its triples, and the LM planner reads it as text.
A fact is a triple of lower-case strings; an attribute is a fact whose object is a value
(`("chest", "is", "locked")`). Node types (room, container, key, ...) live on the nodes.
"""

from __future__ import annotations

from typing import Iterable

import networkx as nx

Fact = tuple[str, str, str]


class KnowledgeGraph:
    """A set of facts with typed entities; facts are edges `subject -relation-> object`."""

    def __init__(self, facts: Iterable[Fact] = (), types: dict[str, str] | None = None):
        self.graph = nx.MultiDiGraph()
        for name, kind in (types or {}).items():
            self.graph.add_node(name, type=kind)
        for fact in facts:
            self.add(*fact)

    def add(self, subject: str, relation: str, obj: str) -> None:
        if not self.graph.has_edge(subject, obj, key=relation):
            self.graph.add_edge(subject, obj, key=relation)

    def remove(self, subject: str, relation: str, obj: str) -> None:
        if self.graph.has_edge(subject, obj, key=relation):
            self.graph.remove_edge(subject, obj, key=relation)

    def discard_where(self, keep) -> None:
        """Remove every fact for which `keep(fact)` is false."""
        for fact in [f for f in self.facts() if not keep(f)]:
            self.remove(*fact)

    def set_type(self, name: str, kind: str) -> None:
        self.graph.add_node(name)
        self.graph.nodes[name]["type"] = kind

    def type_of(self, name: str) -> str | None:
        return self.graph.nodes[name].get("type") if name in self.graph else None

    def facts(self) -> set[Fact]:
        return {(s, r, o) for s, o, r in self.graph.edges(keys=True)}

    def __contains__(self, fact: Fact) -> bool:
        s, r, o = fact
        return self.graph.has_edge(s, o, key=r)

    def __len__(self) -> int:
        return self.graph.number_of_edges()

    def objects(self, subject: str, relation: str) -> list[str]:
        """Every o with (subject, relation, o), sorted."""
        if subject not in self.graph:
            return []
        return sorted(o for _, o, r in self.graph.out_edges(subject, keys=True) if r == relation)

    def subjects(self, relation: str, obj: str) -> list[str]:
        """Every s with (s, relation, obj), sorted."""
        if obj not in self.graph:
            return []
        return sorted(s for s, _, r in self.graph.in_edges(obj, keys=True) if r == relation)

    def value(self, subject: str, relation: str) -> str | None:
        """The object of a functional relation (the first one, sorted), or None."""
        found = self.objects(subject, relation)
        return found[0] if found else None

    def copy(self) -> "KnowledgeGraph":
        other = KnowledgeGraph()
        other.graph = self.graph.copy()
        return other

    def to_text(self, relations: Iterable[str] | None = None) -> str:
        """One fact per line, sorted: `subject | relation | object` (what the LM planner reads)."""
        keep = set(relations) if relations is not None else None
        return "\n".join(f"{s} | {r} | {o}" for s, r, o in sorted(self.facts()) if keep is None or r in keep)


def precision_recall(extracted: Iterable[Fact], true: Iterable[Fact]) -> dict:
    """Precision, recall and F1 of an extracted fact set against the true one (empty sets score 1)."""
    extracted, true = set(extracted), set(true)
    hit = len(extracted & true)
    precision = hit / len(extracted) if extracted else 1.0
    recall = hit / len(true) if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "correct": hit, "extracted": len(extracted), "true": len(true)}


def pooled(scores: list[dict]) -> dict:
    """Micro-averaged precision/recall/F1 over many comparisons (sums of counts, not mean of ratios)."""
    hit = sum(s["correct"] for s in scores)
    extracted = sum(s["extracted"] for s in scores)
    true = sum(s["true"] for s in scores)
    precision = hit / extracted if extracted else 1.0
    recall = hit / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "correct": hit, "extracted": extracted, "true": true,
            "comparisons": len(scores)}
