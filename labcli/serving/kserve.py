"""KServe v2 inference requests checked against a model's declared inputs, before the server sees them.

Triton 2.51 answers some malformed tensors with HTTP 500 (a `data` array with fewer elements than its
`shape` says: "Unable to parse 'data': Shape does not match true shape") although the fault is the
client's. lab's HTTP front (gateway.py) asks Triton once for each model's inputs (name, datatype,
shape with -1 for free dimensions, max_batch_size) and answers these with 400 and a message:
unknown, duplicate or missing inputs, a datatype other than the declared one, negative or wrong
dimensions, a batch over max_batch_size, an element count other than the product of the shape
(flat or nested row-major `data`; ragged nesting is an error), and values of the wrong JSON type or
out of the datatype's range. Binary tensors (the binary-data extension) are checked by byte size.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

INT_RANGES = {f"INT{b}": (-(2 ** (b - 1)), 2 ** (b - 1) - 1) for b in (8, 16, 32, 64)}
INT_RANGES.update({f"UINT{b}": (0, 2 ** b - 1) for b in (8, 16, 32, 64)})
FLOATS = {"FP16", "FP32", "FP64", "BF16"}
SIZES = {"BOOL": 1, "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8, **{k: int(k.lstrip("UINT")) // 8 for k in INT_RANGES}}
MAX_ELEMENTS = 2 ** 31  # more than any JSON body below the front's 256 MiB limit can hold


@dataclass(frozen=True)
class Model:
    """What a model accepts: {input name: (datatype, dims without the batch dimension)} and its batch limit."""

    inputs: dict[str, tuple[str, tuple[int, ...]]]
    max_batch_size: int = 0  # 0: no batch dimension
    outputs: frozenset[str] = frozenset()

    @classmethod
    def from_triton(cls, metadata: dict, config: dict) -> Model:
        """From Triton's GET /v2/models/NAME (metadata) and /v2/models/NAME/config answers."""
        batch = int(config.get("max_batch_size") or 0)
        inputs = {}
        for item in metadata.get("inputs", []):
            shape = tuple(int(d) for d in item.get("shape", []))
            inputs[item["name"]] = (item["datatype"], shape[1:] if batch and shape else shape)
        return cls(inputs, batch, frozenset(o["name"] for o in metadata.get("outputs", [])))


def problem(request: dict, model: Model) -> str | None:
    """Why `request` (a parsed v2 body with a list of input objects) cannot run on `model`, or None."""
    seen = set()
    for i, tensor in enumerate(request["inputs"]):
        name = tensor.get("name")
        if not isinstance(name, str):
            return f"inputs[{i}] has no \"name\""
        if name not in model.inputs:
            return f"unknown input {name!r}; this model takes {sorted(model.inputs)}"
        if name in seen:
            return f"input {name!r} is given twice"
        seen.add(name)
        found = tensor_problem(tensor, *model.inputs[name], model.max_batch_size)
        if found:
            return f"input {name!r}: {found}"
    missing = sorted(set(model.inputs) - seen)
    if missing:
        return f"missing input(s) {missing}"
    outputs = request.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            return "\"outputs\" must be a list of objects with a \"name\""
        unknown = [o.get("name") for o in outputs if o.get("name") not in model.outputs]
        if model.outputs and unknown:
            return f"unknown output(s) {unknown}; this model gives {sorted(model.outputs)}"
    return None


def tensor_problem(tensor: dict, datatype: str, dims: tuple[int, ...], max_batch_size: int) -> str | None:
    """Shape, datatype and element count of one input tensor against its declaration."""
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        return f"\"shape\" must be a list of integers, got {str(shape)[:80]}"
    if any(d < 0 for d in shape):
        return f"shape {shape} has a negative dimension"
    want = ([-1] if max_batch_size else []) + list(dims)
    if len(shape) != len(want) or any(w != -1 and w != d for w, d in zip(want, shape)):
        return f"shape {shape} does not fit the declared {want} (-1: any size)"
    if max_batch_size and shape[0] > max_batch_size:
        return f"batch of {shape[0]} is over this model's max_batch_size {max_batch_size}"
    if tensor.get("datatype") != datatype:
        return f"datatype {str(tensor.get('datatype'))[:20]!r} is not the declared {datatype}"
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        return f"shape {shape} holds {count} elements, more than any request body can carry"
    params = tensor.get("parameters") or {}
    if isinstance(params, dict) and "binary_data_size" in params:
        size = params["binary_data_size"]
        if type(size) is not int or size < 0:
            return "parameters.binary_data_size must be a non-negative integer"
        if datatype != "BYTES" and size != count * SIZES[datatype]:
            return f"binary_data_size {size} is not {count} elements x {SIZES[datatype]} bytes"
        return None
    if "data" not in tensor:
        return "no \"data\" (and no binary_data_size)"
    values, nested_problem = flatten(tensor["data"], shape)
    if nested_problem:
        return nested_problem
    if len(values) != count:
        return f"\"data\" holds {len(values)} element(s), shape {shape} needs {count}"
    return value_problem(values, datatype)


def flatten(data, shape: list[int]) -> tuple[list, str | None]:
    """(row-major elements, None) of flat or nested `data`; nested data must follow the shape exactly."""
    if not isinstance(data, list):
        return [], "\"data\" must be a JSON array"
    if not any(isinstance(x, list) for x in data):
        return data, None
    out: list = []

    def walk(node, depth: int) -> str | None:
        if depth == len(shape):
            if isinstance(node, list):
                return f"\"data\" is nested deeper than shape {shape}"
            out.append(node)
            return None
        if not isinstance(node, list) or len(node) != shape[depth]:
            return f"nested \"data\" does not follow shape {shape} at depth {depth}"
        for child in node:
            found = walk(child, depth + 1)
            if found:
                return found
        return None

    return out, walk(data, 0)


def value_problem(values: list, datatype: str) -> str | None:
    """The first element whose JSON type or range does not suit `datatype`."""
    for i, v in enumerate(values):
        if datatype == "BYTES":
            ok = isinstance(v, str)
        elif datatype == "BOOL":
            ok = isinstance(v, bool)
        elif datatype in FLOATS:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            low, high = INT_RANGES[datatype]
            ok = type(v) is int and low <= v <= high
        if not ok:
            return f"element {i} ({json.dumps(v)[:40]}) is not a valid {datatype} value"
    return None
