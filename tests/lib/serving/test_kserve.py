"""KServe v2 requests checked against a model's declared inputs (what lab's front does before Triton sees them)."""

from __future__ import annotations

import pytest
from kserve_fuzz import FUZZ, LOGITS, TEXT, VALID

from labcli.serving.kserve import Model, problem

MODELS = {"text": TEXT, "logits": LOGITS}


@pytest.mark.parametrize("what, model, body, words", FUZZ, ids=[f[0] for f in FUZZ])
def test_each_malformed_body_is_named(what, model, body, words):
    found = problem(body, MODELS[model])
    assert found and words in found, found


@pytest.mark.parametrize("what, model, body", VALID, ids=[v[0] for v in VALID])
def test_valid_bodies_pass(what, model, body):
    assert problem(body, MODELS[model]) is None


def test_model_from_triton_answers():
    metadata = {"name": "m", "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
                "outputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]}
    assert Model.from_triton(metadata, {"max_batch_size": 16}) == TEXT
    unbatched = Model.from_triton({**metadata, "inputs": [{"name": "x", "datatype": "FP32", "shape": [3]}]}, {})
    assert unbatched.max_batch_size == 0 and unbatched.inputs == {"x": ("FP32", (3,))}
    x = {"name": "x", "shape": [3], "datatype": "FP32"}
    assert problem({"inputs": [{**x, "data": [1, 2.5, 0]}]}, unbatched) is None
    assert "element 1 (true) is not a valid FP32" in problem({"inputs": [{**x, "data": [1, True, 0]}]}, unbatched)
