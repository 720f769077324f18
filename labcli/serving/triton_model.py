"""Triton Python-backend model (copied as `model.py` into each model version folder).

Runs inside Triton's Python-backend stub, in the numpy<2 environment, with greedy.py and the
ONNX bundle beside it. Two kinds, set by the `kind` parameter in config.pbtxt:
  text:   TEXT (BYTES) -> TEXT (BYTES), greedy decoding; a dynamic batch is decoded together.
  logits: input_ids, attention_mask[, decoder_input_ids] (INT64) -> next-token logits (FP32, [batch, 1, vocab]);
          requests of equal shapes in a dynamic batch run as one onnxruntime call.
A bad request gets an INVALID_ARG error (HTTP 400) and never takes the model down.
"""

import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from greedy import BadInput, OnnxGenerator


def error_response(message):
    try:
        err = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
    except (AttributeError, TypeError):  # older stubs have no error codes
        err = pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=err)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.kind = params["kind"]
        here = os.path.dirname(os.path.abspath(__file__))
        self.generator = OnnxGenerator(os.path.join(here, "bundle"), threads=int(params.get("threads", "1")))

    def execute(self, requests):
        if self.kind == "text":
            return self.execute_text(requests)
        return self.execute_logits(requests)

    def execute_text(self, requests):
        responses = [None] * len(requests)
        batch = []  # (request index, texts)
        for i, request in enumerate(requests):
            try:
                raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
                texts = []
                for item in raw:
                    try:
                        text = item.decode("utf-8") if isinstance(item, bytes) else str(item)
                    except UnicodeDecodeError:
                        raise BadInput("TEXT is not UTF-8") from None
                    self.generator.encode(text)  # validates: empty / too long
                    texts.append(text)
                batch.append((i, texts))
            except BadInput as exc:
                responses[i] = error_response(str(exc))
        flat = [t for _, texts in batch for t in texts]
        outputs = self.generator.generate(flat) if flat else []
        at = 0
        for i, texts in batch:
            out = np.array([s.encode("utf-8") for s in outputs[at: at + len(texts)]], dtype=np.object_).reshape(-1, 1)
            at += len(texts)
            responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TEXT", out)])
        return responses

    def execute_logits(self, requests):
        names = ["input_ids", "attention_mask"] + (["decoder_input_ids"] if self.generator.task == "seq2seq" else [])
        responses = [None] * len(requests)
        groups = {}  # shapes -> [(request index, arrays)]
        for i, request in enumerate(requests):
            arrays = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in names]
            groups.setdefault(tuple(a.shape[1:] for a in arrays), []).append((i, arrays))
        for members in groups.values():
            stacked = [np.concatenate([m[1][k] for m in members]) for k in range(len(names))]
            try:
                logits = self.generator.logits(*stacked)
            except BadInput:
                for i, arrays in members:  # find which request(s) are bad, answer the rest
                    try:
                        responses[i] = self.ok(self.generator.logits(*arrays))
                    except BadInput as exc:
                        responses[i] = error_response(str(exc))
                continue
            at = 0
            for i, arrays in members:
                rows = arrays[0].shape[0]
                responses[i] = self.ok(logits[at: at + rows])
                at += rows
        return responses

    @staticmethod
    def ok(logits):
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("logits", logits.astype(np.float32))])

    def finalize(self):
        self.generator = None
