"""process_docs functions of lab's local harness tasks (loaded by lm_eval from this folder)."""

import re

ARC_PREFIX = "Please choose the correct answer to the question: "


def arc_doc(doc: dict) -> dict:
    """One LLM-Adapters ARC row -> question, choices, label (the 0-based index of `answerN`)."""
    text = doc["instruction"].replace(ARC_PREFIX, "").split("\n\nAnswer format:")[0]
    stem, options = text.split("\n\nAnswer1:", 1)
    choices = [c.strip() for c in re.split(r"\s*Answer\d+:\s*", "Answer1:" + options) if c.strip()]
    return {"question": stem.strip(), "choices": choices, "label": int(doc["answer"].removeprefix("answer")) - 1}


def svamp_doc(doc: dict) -> dict:
    """question = Body + Question (as labcli.data.svamp), target = the answer as a plain number."""
    answer = float(doc["Answer"])
    return {"question": f"{doc['Body'].strip()} {doc['Question'].strip()}",
            "target": str(int(answer)) if answer.is_integer() else str(answer)}


def process_arc(dataset):
    return dataset.map(arc_doc)


def process_svamp(dataset):
    """lab's fixed SVAMP test split (labcli.data.svamp.split_indices)."""
    from labcli.data.svamp import split_indices

    return dataset.select(split_indices("test", len(dataset))).map(svamp_doc)
