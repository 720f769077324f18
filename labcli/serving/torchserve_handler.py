"""TorchServe custom handler: text in -> translated text out, with transformers in eager mode, decoding as the run did.

Packed into the .mar with the model's save_pretrained files and serve_meta.json; the worker runs in
lab's environment and loads the model with lab's loader; serve_meta.json holds the run's decoding
(labcli/serving/decoding.py: tokenization, generate arguments). A request is
JSON {"text": "..."}; the answer is {"text": "..."}. Bad requests (not JSON, no "text", empty or
oversized text) get a 400 with {"error": ...} and the worker keeps serving the rest of the batch.
"""

import json
import os

from labcli.serving.ts_entry import entry


class BadRequest(ValueError):
    pass


class TextHandler:
    def initialize(self, context):
        import torch

        from labcli.models.loader import load_model

        model_dir = context.system_properties["model_dir"]
        with open(os.path.join(model_dir, "serve_meta.json"), encoding="utf-8") as fh:
            self.meta = json.load(fh)
        torch.set_num_threads(int(self.meta.get("threads", 1)))
        self.seq2seq = self.meta["task"] == "seq2seq"
        loaded = load_model(model_dir, self.meta["task"])
        self.model, self.tokenizer = loaded.model.float().eval(), loaded.tokenizer
        if not self.seq2seq:
            self.tokenizer.padding_side = "left"  # decoder-only batches must be left-padded
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
        self.initialized = True

    def parse(self, row) -> str:
        body = row.get("body") if row.get("body") is not None else row.get("data")
        if isinstance(body, (bytes, bytearray)):
            try:
                body = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise BadRequest('request body is not valid JSON; send {"text": "..."}') from None
        if not isinstance(body, dict) or "text" not in body:
            raise BadRequest('missing "text": send {"text": "..."}')
        text = body["text"]
        if not isinstance(text, str) or not text.strip():
            raise BadRequest('"text" must be a non-empty string')
        limit = int(self.meta["max_input_tokens"])
        if len(text) > 16 * limit:
            raise BadRequest(f"text of {len(text)} characters is too long (at most {16 * limit})")
        from labcli.serving.decoding import encode

        untruncated = {**self.meta["decoding"], "max_source_len": None}  # longer than the run translated: refused, not cut
        n = len(encode(self.tokenizer, [text], untruncated, None)["input_ids"][0])
        if n > limit:
            raise BadRequest(f"text is {n} tokens long; the limit is {limit}")
        return text

    def generate(self, texts):
        import torch

        from labcli.serving.decoding import encode

        decoding = self.meta["decoding"]
        enc = encode(self.tokenizer, texts, decoding)
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.no_grad():
            out = self.model.generate(**enc, **decoding["generate"])
        if not self.seq2seq:
            out = out[:, enc["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def handle(self, data, context):
        answers, good = [None] * len(data), []
        for i, row in enumerate(data):
            try:
                good.append((i, self.parse(row)))
            except BadRequest as exc:
                context.set_response_status(400, str(exc), idx=i)
                answers[i] = json.dumps({"error": str(exc)})
        if good:
            for (i, _), text in zip(good, self.generate([t for _, t in good])):
                answers[i] = json.dumps({"text": text}, ensure_ascii=False)
        return answers


handle = entry(TextHandler())
