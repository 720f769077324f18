"""TorchServe custom handler for `lab serve detector`: a file in -> P(fake) as JSON out.

Packed into the .mar with a deepfake run's detector/ files (detector.json, *.joblib, *.pt) and serve_meta.json.
The request body is the file itself (a WAV for a voice run; PNG, JPEG, ... for an image run), sent as
`Content-Type: application/octet-stream` or as a multipart form field. The answer is
{"score": P(fake) from the chosen detector, "label": "fake" | "real", "detector": its name,
 "scores": {every saved detector: P(fake)}, "kind": "voice" | "image"}. Scoring runs labcli's own decode,
features and classifiers (labcli.detect.deepfake_store), so a served score equals the run's score for the file.
Bad files (empty, too large, not audio / not an image) get a 400 with {"error": ...}; the worker keeps serving.
"""

import json
import os

from labcli.serving.ts_entry import entry


class BadRequest(ValueError):
    pass


class DetectorHandler:
    def initialize(self, context):
        import torch

        from labcli.detect import deepfake_store

        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "serve_meta.json"), encoding="utf-8") as fh:
            self.meta = json.load(fh)
        torch.set_num_threads(int(self.meta.get("threads", 1)))
        self.store = deepfake_store
        self.det_meta, self.detectors = deepfake_store.load(model_dir)
        self.initialized = True

    def file_bytes(self, row) -> bytes:
        """The uploaded file: the raw body, or the first file field of a multipart form."""
        body = row.get("body") if row.get("body") is not None else row.get("data")
        if body is None:
            body = next((v for v in row.values() if isinstance(v, (bytes, bytearray))), None)
        if isinstance(body, (dict, list, str)):
            raise BadRequest("the request body was parsed as JSON/text; POST the file's bytes with "
                             "Content-Type: application/octet-stream (curl --data-binary @FILE -H 'Content-Type: application/octet-stream')")
        if not body:
            raise BadRequest("empty request body; POST the file's bytes")
        limit = int(self.meta["max_bytes"])
        if len(body) > limit:
            raise BadRequest(f"file of {len(body)} bytes is too large (at most {limit})")
        return bytes(body)

    def answer(self, data: bytes) -> dict:
        from labcli.errors import UserError

        try:
            scores = self.store.score_bytes(self.det_meta, self.detectors, data, "file")
        except UserError as exc:
            raise BadRequest(str(exc)) from None
        name = self.meta["detector"]
        threshold = float(self.meta["threshold"])
        return {"score": scores[name], "label": "fake" if scores[name] >= threshold else "real", "detector": name,
                "threshold": threshold, "scores": scores, "kind": self.det_meta["kind"]}

    def handle(self, data, context):
        answers = []
        for i, row in enumerate(data):
            try:
                answers.append(json.dumps(self.answer(self.file_bytes(row))))
            except BadRequest as exc:
                context.set_response_status(400, str(exc), idx=i)
                answers.append(json.dumps({"error": str(exc)}))
        return answers


handle = entry(DetectorHandler())
