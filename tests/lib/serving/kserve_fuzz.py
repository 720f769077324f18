"""A KServe v2 fuzz list: malformed inference bodies for lab's text and logits models, each a client error.

Shared by tests/lib/serving/test_kserve.py (the checks, in-process) and tests/recipes/serve/test_triton.py
(the same bodies through lab's front to a real Triton: each must get a 4xx and the server stays healthy)."""

from __future__ import annotations

from labcli.serving.kserve import Model

TEXT = Model({"TEXT": ("BYTES", (1,))}, 16, frozenset({"TEXT"}))
LOGITS = Model({n: ("INT64", (-1,)) for n in ("input_ids", "attention_mask", "decoder_input_ids")}, 16, frozenset({"logits"}))


def text(data, shape=None, datatype="BYTES", name="TEXT", **extra) -> dict:
    return {"inputs": [{"name": name, "shape": [len(data), 1] if shape is None else shape, "datatype": datatype,
                        "data": data, **extra}]}


def ids(shape=(1, 2), values=None, names=("input_ids", "attention_mask", "decoder_input_ids"), datatype="INT64") -> dict:
    data = values if values is not None else [1] * (shape[0] * shape[1])
    return {"inputs": [{"name": n, "shape": list(shape), "datatype": datatype, "data": data} for n in names]}


# (what, "text" | "logits", body, words the error must contain)
FUZZ = [
    ("fewer elements than the shape", "text", text(["a"], [2, 1]), "holds 1 element"),
    ("more elements than the shape", "text", text(["a", "b", "c"], [2, 1]), "holds 3 element"),
    ("logits: fewer ids than the shape", "logits", ids((1, 3), [1, 2]), "holds 2 element"),
    ("ragged nested data", "text", text([["a"], ["b", "c"]], [2, 1]), "does not follow shape"),
    ("nested deeper than the shape", "text", text([[["a"]]], [1, 1]), "nested deeper"),
    ("nested data with the wrong outer length", "text", text([["a"], ["b"]], [3, 1]), "does not follow shape"),
    ("wrong datatype", "text", text([1], datatype="INT64"), "not the declared BYTES"),
    ("unknown datatype", "text", text(["a"], datatype="STRING"), "not the declared BYTES"),
    ("number where BYTES are declared", "text", text([1]), "not a valid BYTES"),
    ("string ids", "logits", ids((1, 2), ["1", "2"]), "not a valid INT64"),
    ("float ids", "logits", ids((1, 2), [1.5, 2]), "not a valid INT64"),
    ("ids beyond int64", "logits", ids((1, 2), [1, 2 ** 70]), "not a valid INT64"),
    ("logits: wrong datatype", "logits", ids(datatype="FP32"), "not the declared INT64"),
    ("huge shape", "text", text(["a"], [1, 10 ** 12]), "does not fit"),
    ("huge batch", "text", text(["a"], [10 ** 12, 1]), "max_batch_size"),
    ("huge free dimension", "logits", ids((1, 10 ** 15), [1]), "more than any request body"),
    ("batch over max_batch_size", "text", text(["a"] * 17), "max_batch_size 16"),
    ("negative dimension", "text", text(["a"], [-1, 1]), "negative"),
    ("negative free dimension", "logits", ids((1, -2), [1]), "negative"),
    ("rank too low", "text", text(["a"], [1]), "does not fit"),
    ("rank too high", "text", text(["a"], [1, 1, 1]), "does not fit"),
    ("non-integer dimension", "text", text(["a"], [1.0, 1]), "list of integers"),
    ("shape not a list", "text", text(["a"], "1,1"), "list of integers"),
    ("unknown input", "text", text(["a"], name="SOURCE"), "unknown input 'SOURCE'"),
    ("an unknown input beside a good one", "text",
     {"inputs": text(["a"])["inputs"] + text(["b"], name="EXTRA")["inputs"]}, "unknown input 'EXTRA'"),
    ("input given twice", "text", {"inputs": text(["a"])["inputs"] * 2}, "given twice"),
    ("missing inputs", "logits", ids(names=("input_ids",)), "missing input(s)"),
    ("no name", "text", {"inputs": [{"shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}, "no \"name\""),
    ("data not an array", "text", text("abc", [1, 1]), "must be a JSON array"),
    ("no data", "text", {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES"}]}, "no \"data\""),
    ("unknown output", "text", {**text(["a"]), "outputs": [{"name": "LOGITS"}]}, "unknown output"),
    ("binary size that does not fit the shape", "logits",
     {"inputs": [{"name": n, "shape": [1, 2], "datatype": "INT64", "parameters": {"binary_data_size": 9}}
                 for n in ("input_ids", "attention_mask", "decoder_input_ids")]}, "binary_data_size 9"),
]

VALID = [
    ("flat", "text", text(["a", "b"])),
    ("nested", "text", text([["a"], ["b"]])),
    ("logits", "logits", ids((2, 3))),
    ("requested output", "text", {**text(["a"]), "outputs": [{"name": "TEXT"}]}),
    ("binary tensors", "logits", {"inputs": [{"name": n, "shape": [1, 2], "datatype": "INT64", "parameters": {"binary_data_size": 16}}
                                             for n in ("input_ids", "attention_mask", "decoder_input_ids")]}),
]
