"""Export a Hugging Face model to an ONNX bundle with `torch.onnx.export(dynamo=True)` and check it.

seq2seq models become encoder.onnx + decoder.onnx (so greedy decoding runs the encoder once);
causal LMs become model.onnx. Batch and sequence axes stay dynamic. The graphs return the
next-token logits (LM head on the last position only): greedy decoding needs nothing else, and
projecting every position onto the vocabulary dominated each step's cost. Every export is checked
against the eager model before use: max |logits difference| <= 1e-4, the same token ids from both
tokenizers and identical greedy text on the sample sentences; any mismatch raises and leaves no
bundle. Bundles are cached under LAB_HOME/serving/onnx/ keyed by the model files, so serving a run
twice is fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from labcli import runs
from labcli.errors import UserError
from labcli.paths import lab_home
from labcli.serving.decoding import encode, prepare
from labcli.serving.source import Source

TOLERANCE = 1e-4
SAMPLE_TEXTS = ["hello world", "how are you", "thank you very much", "where is the temple"]
FORMAT = 5  # bump when the bundle layout or its checks change


def load_eager(source: Source):
    """(model, tokenizer) in eval mode on the CPU, float32, through lab's one model loader."""
    from labcli.models.loader import load_model

    loaded = load_model(str(source.model_dir), source.task)
    return loaded.model.float().eval(), loaded.tokenizer


def cache_key(source: Source, decoding: dict) -> str:
    import torch

    how = json.dumps({k: decoding.get(k) for k in ("generate", "prompt", "max_source_len", "num_beams")}, sort_keys=True)
    digest = hashlib.sha256(f"{FORMAT}|{torch.__version__}|{source.task}|{how}".encode())
    for path in sorted(source.model_dir.rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(source.model_dir)}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def export_bundle(source: Source, decoding: dict, log=print) -> Path:
    """The checked ONNX bundle for `source`, decoding as `decoding` says (exported now, or from the cache)."""
    if decoding["num_beams"] != 1:
        raise UserError(f"this run's scores are for beam search ({decoding['num_beams']} beams); the ONNX bundle decodes greedily",
                        "serve it with `lab serve torchserve` (which decodes as the run did), or score the run greedily too")
    dest = lab_home() / "serving" / "onnx" / f"{source.name}-{cache_key(source, decoding)}"
    if (dest / "parity.json").is_file():
        log(f"ONNX bundle (cached): {dest}")
        return dest
    model, tokenizer = load_eager(source)
    prepare(tokenizer, decoding)  # the saved tokenizer.json encodes as the run's evaluation did

    def build(folder: Path) -> None:
        write_meta(folder, source, model, tokenizer, decoding)
        started = time.perf_counter()
        export_graphs(folder, source.task, model, tokenizer)
        export_s = time.perf_counter() - started
        parity = check_parity(folder, model, tokenizer, decoding)
        parity["export_s"] = round(export_s, 2)
        require_parity(parity, source)
        runs.write_json(folder / "parity.json", parity)

    runs.replace_dir(dest, build)
    parity = read_json(dest / "parity.json")
    log(f"ONNX bundle: {dest} (export {parity['export_s']:.1f}s, max |diff| {parity['max_abs_diff']:.1e}, greedy text identical)")
    return dest


def require_parity(parity: dict, source: Source) -> None:
    """Raise unless the export matches eager: logits within TOLERANCE, same tokens, same greedy text."""
    hint = "serve the model with torch instead (lab serve torchserve), or report the model to lab"
    if parity["max_abs_diff"] > TOLERANCE:
        raise UserError(f"ONNX export of {source.model_dir} differs from eager by {parity['max_abs_diff']:.2e} > {TOLERANCE}", hint)
    if not parity["tokenizer_match"]:
        raise UserError(f"the exported tokenizer of {source.model_dir} encodes the sample texts differently from transformers'", hint)
    for sample in parity["samples"]:
        if sample["onnx"] != sample["eager"]:
            raise UserError(f"ONNX greedy text differs from eager for {sample['input']!r}: "
                            f"{sample['onnx']!r} vs {sample['eager']!r}", hint)


def link_tree(src: Path, dest: Path) -> None:
    """Copy a folder by hard links where the file system allows (ONNX weights can be large)."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dest, copy_function=link, dirs_exist_ok=True)


def write_meta(folder: Path, source: Source, model, tokenizer, decoding: dict) -> None:
    gen = model.generation_config
    how = decoding["generate"]
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512
    model_max = tokenizer.model_max_length if tokenizer.model_max_length < 1e9 else positions
    meta = {
        "task": source.task,
        "source": str(source.model_dir),
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
        "max_input_tokens": int(min(positions, model_max, 512)),
        "max_new_tokens": int(how["max_new_tokens"]),
        "no_repeat_ngram_size": int(how.get("no_repeat_ngram_size") or 0),
        "prompt": decoding.get("prompt"),
        "max_source_len": decoding.get("max_source_len"),
        "decoding_source": decoding.get("source"),
        "decoder_start_token_id": first_set(gen, config, "decoder_start_token_id"),
        "forced_bos_token_id": how.get("forced_bos_token_id", gen.forced_bos_token_id),
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

    import onnx
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
        # onnx.save_model rather than program.save: the latter goes through onnx_ir.save, whose
        # signature differs between onnx-ir releases (a fresh install once failed on it).
        big = sum(p.numel() * p.element_size() for p in module.parameters()) > 1 << 30  # protobuf caps a file at 2 GB
        onnx.save_model(program.model_proto, str(folder / name), save_as_external_data=big)

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


def check_parity(folder: Path, model, tokenizer, decoding: dict) -> dict:
    """Max |ORT - eager| logits on a padded batch, token ids from both tokenizers, greedy text from both."""
    import numpy as np

    from labcli.serving.greedy import OnnxGenerator

    generator = OnnxGenerator(folder)
    ids, mask, dec = sample_tensors(model, tokenizer)
    reference = eager_logits(model, ids, mask, dec)
    diff = float(np.abs(generator.logits(ids, mask, dec) - reference).max())
    arrays = {"input_ids": ids, "attention_mask": mask, "logits": reference}
    if dec is not None:
        arrays["decoder_input_ids"] = dec
    # the servers' smoke tests compare against this
    runs.write_with(folder / "sample.npz", lambda tmp: np.savez(tmp, **arrays))
    onnx_text = generator.generate(SAMPLE_TEXTS)
    eager_text = eager_generate(model, tokenizer, SAMPLE_TEXTS, decoding)
    tokens_match = all(generator.encode(t) == encode(tokenizer, [t], decoding, None)["input_ids"][0] for t in SAMPLE_TEXTS)
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
    """Eager next-token logits [batch, 1, vocab] (under `last_position_head` the head runs on the last position only)."""
    import torch

    with torch.no_grad():
        kwargs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if dec is not None:
            kwargs["decoder_input_ids"] = torch.from_numpy(dec)
        return model(**kwargs, use_cache=False).logits[:, -1:, :].numpy()


def eager_generate(model, tokenizer, texts: list[str], decoding: dict, use_cache: bool = True) -> list[str]:
    """The reference every export and server is checked against: transformers' generate with the run's decoding."""
    from labcli.serving.decoding import generate

    return generate(model, tokenizer, texts, decoding, use_cache)


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
