"""`tiny-*` presets: small configs of real architectures, built with a fixed seed.

They exist so every recipe runs on a laptop CPU in minutes; real hub ids use the same code path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from labcli.paths import lab_home

# Keyed by preset: (task, config class name, config kwargs). vocab size comes from the tokenizer.
PRESETS: dict[str, tuple[str, str, dict]] = {
    "tiny-gpt2": ("causal-lm", "GPT2Config", dict(n_layer=2, n_head=4, n_embd=128, n_positions=512)),
    "tiny-llama": ("causal-lm", "LlamaConfig", dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                                                  num_attention_heads=4, num_key_value_heads=2,
                                                  max_position_embeddings=512, tie_word_embeddings=True)),
    "tiny-mistral": ("causal-lm", "MistralConfig", dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                                                      num_attention_heads=4, num_key_value_heads=2, sliding_window=256,
                                                      max_position_embeddings=512, tie_word_embeddings=True)),
    "tiny-mbart": ("seq2seq", "MBartConfig", dict(d_model=128, encoder_layers=2, decoder_layers=2,
                                                 encoder_attention_heads=4, decoder_attention_heads=4,
                                                 encoder_ffn_dim=256, decoder_ffn_dim=256,
                                                 max_position_embeddings=256, scale_embedding=True)),
    "tiny-t5": ("seq2seq", "T5Config", dict(d_model=128, d_ff=256, d_kv=32, num_layers=2, num_decoder_layers=2,
                                           num_heads=4, feed_forward_proj="gated-gelu")),
}

DROPOUT_KEYS = ("dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "dropout_rate")


def preset_config(name: str, tokenizer, overrides: dict, dropout: float):
    import transformers

    task, cls_name, kwargs = PRESETS[name]
    cls = getattr(transformers, cls_name)
    kwargs = {**kwargs, **overrides, "vocab_size": len(tokenizer),
              "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
              "eos_token_id": tokenizer.eos_token_id}
    if task == "seq2seq":
        kwargs["decoder_start_token_id"] = tokenizer.eos_token_id if cls_name == "MBartConfig" else tokenizer.pad_token_id
    cfg = cls(**kwargs)
    for key in DROPOUT_KEYS:
        if hasattr(cfg, key):
            setattr(cfg, key, dropout)
    return task, cfg


def materialize(name: str, tokenizer, overrides: dict, dropout: float, seed: int) -> Path:
    """Build the preset with `seed` and save it (weights + tokenizer) once under LAB_HOME."""
    import torch
    from filelock import FileLock

    from labcli import runs
    from labcli.models.loader import auto_class

    task, cfg = preset_config(name, tokenizer, overrides, dropout)
    key = json.dumps([name, cfg.to_dict(), seed, tokenizer.backend_tokenizer.to_str()], sort_keys=True, default=str)
    folder = lab_home() / "presets" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Under an initialized process group (Ray Train forms it before `lab` starts) transformers'
    # save_pretrained writes weights only on rank 0: rank 0 builds, the others wait for it.
    grouped = torch.distributed.is_available() and torch.distributed.is_initialized()
    if grouped and torch.distributed.get_rank() != 0:
        torch.distributed.barrier()
        return folder
    with FileLock(str(folder) + ".lock"):  # several ranks or jobs may start with an empty cache
        if not (folder / "config.json").exists():
            torch.manual_seed(seed)
            model = auto_class(task).from_config(cfg)

            def write(tmp: Path) -> None:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)

            runs.replace_dir(folder, write)
    if grouped:
        torch.distributed.barrier()
    return folder
