"""Export a Hugging Face model to an ONNX bundle with `torch.onnx.export(dynamo=True)` and check it.

seq2seq models become encoder.onnx + decoder.onnx (so greedy decoding runs the encoder once);
causal LMs become model.onnx. Batch and sequence axes stay dynamic. The graphs return the
next-token logits (LM head on the last position only): greedy decoding needs nothing else, and
projecting every position onto the vocabulary dominated each step's cost. Every export is checked
against the eager model (max |logits difference| <= 1e-4 and identical greedy text) before use,
and cached under LAB_HOME/serving/onnx/ keyed by the model files, so serving a run twice is fast.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from labcli import runs
from labcli.errors import UserError
from labcli.paths import lab_home
from labcli.serving.source import Source

TOLERANCE = 1e-4
SAMPLE_TEXTS = ["hello world", "how are you", "thank you very much", "where is the temple"]
FORMAT = 3  # bump when the bundle layout changes


def load_eager(source: Source):
    """(model, tokenizer) in eval mode on the CPU, float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    cls = AutoModelForSeq2SeqLM if source.task == "seq2seq" else AutoModelForCausalLM
    try:
        model = cls.from_pretrained(source.model_dir, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(source.model_dir)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load {source.model_dir}: {str(exc).splitlines()[0]}",
                        "the folder must be a complete save_pretrained model with its tokenizer") from None
    return model, tokenizer


def cache_key(source: Source, max_new_tokens: int) -> str:
    import torch

    digest = hashlib.sha256(f"{FORMAT}|{torch.__version__}|{source.task}|{max_new_tokens}".encode())
    for path in sorted(source.model_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(source.model_dir)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def export_bundle(source: Source, max_new_tokens: int = 64, log=print) -> Path:
    """The checked ONNX bundle for `source` (exported now, or from the cache)."""
    dest = lab_home() / "serving" / "onnx" / f"{source.name}-{cache_key(source, max_new_tokens)}"
    if (dest / "parity.json").is_file():
        log(f"ONNX bundle (cached): {dest}")
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model, tokenizer = load_eager(source)
    write_meta(tmp, source, model, tokenizer, max_new_tokens)
    started = time.perf_counter()
    export_graphs(tmp, source.task, model, tokenizer)
    export_s = time.perf_counter() - started
    parity = check_parity(tmp, model, tokenizer)
    parity["export_s"] = round(export_s, 2)
    runs.write_json(tmp / "parity.json", parity)
    if parity["max_abs_diff"] > TOLERANCE:
        raise UserError(f"ONNX export of {source.model_dir} differs from eager by {parity['max_abs_diff']:.2e} > {TOLERANCE}",
                        f"serve with torch instead (lab serve torchserve), and see {tmp}")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log(f"ONNX bundle: {dest} (export {export_s:.1f}s, max |diff| {parity['max_abs_diff']:.1e})")
    return dest


def write_meta(folder: Path, source: Source, model, tokenizer, max_new_tokens: int) -> None:
    gen = model.generation_config
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    model_max = tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else positions
    meta = {
        "task": source.task,
        "source": str(source.model_dir),
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
        "max_input_tokens": int(min(positions, model_max, 512)),
        "max_new_tokens": int(min(gen.max_new_tokens or max_new_tokens, max_new_tokens)),
        "decoder_start_token_id": first_set(gen, config, "decoder_start_token_id"),
        "forced_bos_token_id": gen.forced_bos_token_id,
        "forced_eos_token_id": gen.forced_eos_token_id,
        "eos_token_id": first_set(gen, config, "eos_token_id"),
        "pad_token_id": first_set(gen, config, "pad_token_id"),
    }
    runs.write_json(folder / "meta.json", meta)
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))


def first_set(gen, config, key: str):
    """A generation setting from generation_config, else from the model config, else None."""
    value = getattr(gen, key, None)
    return value if value is not None else getattr(config, key, None)


def export_graphs(folder: Path, task: str, model, tokenizer) -> None:
    import logging
    import warnings

    import torch

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    batch, seq, dec = (torch.export.Dim(n, min=1, max=4096) for n in ("batch", "seq", "dec"))
    sample = tokenizer(SAMPLE_TEXTS[:2], return_tensors="pt", padding=True)
    ids, mask = sample["input_ids"], sample["attention_mask"]

    def export(module, args, name, inputs, shapes):
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, dynamo=True, input_names=inputs, output_names=[name.split(".")[0] + "_out"],
                                        dynamic_shapes=shapes, verbose=False)
        program.save(str(folder / name))

    EncoderLogits, DecoderLogits, CausalLogits = wrappers()
    with last_position_head(model):
        if task == "seq2seq":
            encoder, decoder = EncoderLogits(model), DecoderLogits(model)
            export(encoder, (ids, mask), "encoder.onnx", ["input_ids", "attention_mask"], ({0: batch, 1: seq}, {0: batch, 1: seq}))
            hidden = encoder(ids, mask)
            dec_ids = torch.tensor([[model.generation_config.decoder_start_token_id or 0] * 3] * ids.shape[0])
            export(decoder, (dec_ids, hidden, mask), "decoder.onnx", ["decoder_input_ids", "encoder_hidden_states", "attention_mask"],
                   ({0: batch, 1: dec}, {0: batch, 1: seq}, {0: batch, 1: seq}))
        else:
            export(CausalLogits(model), (ids, mask), "model.onnx", ["input_ids", "attention_mask"],
                   ({0: batch, 1: seq}, {0: batch, 1: seq}))


@contextmanager
def last_position_head(model):
    """Temporarily make the model's LM head project only the last position (restored afterwards)."""
    import torch

    class LastPosition(torch.nn.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        def forward(self, hidden):
            return self.head(hidden[:, -1:, :])

    head = model.get_output_embeddings()
    model.set_output_embeddings(LastPosition(head))
    try:
        yield
    finally:
        model.set_output_embeddings(head)


def check_parity(folder: Path, model, tokenizer) -> dict:
    """Max |ORT - eager| logits on a padded batch, and greedy text from both on sample texts."""
    import numpy as np

    from labcli.serving.greedy import OnnxGenerator

    generator = OnnxGenerator(folder)
    ids, mask, dec = sample_tensors(model, tokenizer)
    reference = eager_logits(model, ids, mask, dec)
    diff = float(np.abs(generator.logits(ids, mask, dec) - reference).max())
    arrays = {"input_ids": ids, "attention_mask": mask, "logits": reference}
    if dec is not None:
        arrays["decoder_input_ids"] = dec
    with open(folder / "sample.npz", "wb") as fh:  # the servers' smoke tests compare against this
        np.savez(fh, **arrays)
    onnx_text = generator.generate(SAMPLE_TEXTS)
    eager_text = eager_generate(model, tokenizer, SAMPLE_TEXTS, generator.meta["max_new_tokens"])
    tokens_match = all(generator.encode(t) == tokenizer(t)["input_ids"] for t in SAMPLE_TEXTS)
    return {"max_abs_diff": diff, "tolerance": TOLERANCE, "text_match": onnx_text == eager_text, "tokenizer_match": tokens_match,
            "samples": [{"input": t, "onnx": o, "eager": e} for t, o, e in zip(SAMPLE_TEXTS, onnx_text, eager_text)]}


def sample_tensors(model, tokenizer):
    """A fixed padded batch (int64 numpy) for parity checks and the tensor endpoint's smoke test."""
    import numpy as np

    enc = tokenizer(SAMPLE_TEXTS[:3], return_tensors="np", padding=True)
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    dec = None
    if model.config.is_encoder_decoder:
        start = model.generation_config.decoder_start_token_id or 0
        dec = np.concatenate([np.full((ids.shape[0], 1), start), ids[:, :3]], axis=1).astype(np.int64)
    return ids, mask, dec


def eager_logits(model, ids, mask, dec=None):
    """Eager next-token logits [batch, 1, vocab] (the LM head still runs on every position)."""
    import torch

    with torch.no_grad():
        kwargs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if dec is not None:
            kwargs["decoder_input_ids"] = torch.from_numpy(dec)
        return model(**kwargs, use_cache=False).logits[:, -1:, :].numpy()


def eager_generate(model, tokenizer, texts: list[str], max_new_tokens: int) -> list[str]:
    """The reference: transformers' greedy generate, one text at a time (no padding effects)."""
    import torch

    out = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**enc, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)[0]
        if not model.config.is_encoder_decoder:
            ids = ids[enc["input_ids"].shape[1]:]
        out.append(tokenizer.decode(ids, skip_special_tokens=True))
    return out


def wrappers():
    """torch.nn.Module wrappers that give each exported graph plain tensor inputs and one output."""
    import torch

    class EncoderLogits(torch.nn.Module):
        """input_ids, attention_mask -> encoder hidden states."""

        def __init__(self, model):
            super().__init__()
            self.encoder = model.get_encoder()

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    class DecoderLogits(torch.nn.Module):
        """decoder_input_ids, encoder hidden states, attention_mask -> logits (no KV cache)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, decoder_input_ids, encoder_hidden_states, attention_mask):
            return self.model(decoder_input_ids=decoder_input_ids, encoder_outputs=(encoder_hidden_states,),
                              attention_mask=attention_mask, use_cache=False).logits

    class CausalLogits(torch.nn.Module):
        """input_ids, attention_mask -> logits (no KV cache)."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    return EncoderLogits, DecoderLogits, CausalLogits


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_sample(bundle: Path) -> dict:
    """The sample inputs and their eager logits saved at export time."""
    import numpy as np

    with np.load(bundle / "sample.npz") as data:
        return {k: data[k] for k in data.files}
