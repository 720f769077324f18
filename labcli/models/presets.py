"""`tiny-*` presets: small configs of real architectures, built with a fixed seed.

They exist so every recipe runs on a laptop CPU in minutes; real hub ids use the same code path.
A pretrained preset (`PRETRAINED`) is the same architecture after a training run that builds it
once: `pretrained_base` runs it as a cached prerequisite and refuses a damaged cache entry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from labcli.errors import UserError
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

# name -> (the architecture preset, verb, recipe of the run that trains it)
PRETRAINED: dict[str, tuple[str, str, str]] = {"tiny-mbart-pretrained": ("tiny-mbart", "finetune", "newari-pretrain")}
PRESETS.update({name: PRESETS[arch] for name, (arch, _, _) in PRETRAINED.items()})

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

    if name in PRETRAINED:
        _, verb, recipe = PRETRAINED[name]
        raise UserError(f"'{name}' is a trained base, built by `lab {verb} {recipe}`",
                        "use it from `lab finetune newari`, or pass that run's model/ folder")
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


def pretrained_base(name: str, overrides: list[str], why: str) -> Path:
    """The model folder of pretrained preset `name`: its run (`lab VERB RECIPE OVERRIDES`) built once
    and cached by labcli.runs.prerequisite (keyed by the overrides, e.g. seed and data digest, and
    the recipe's YAML). A cached run whose model is missing or differs from the sha256 its summary
    recorded is deleted and rebuilt, never loaded."""
    import shutil

    from labcli import runs

    _, verb, recipe = PRETRAINED[name]
    folder = runs.prerequisite(verb, recipe, overrides, why)
    problem = base_problem(folder)
    if problem:
        print(f"{why}: the cached base is unusable ({problem}); rebuilding it", flush=True)
        shutil.rmtree(folder)
        folder = runs.prerequisite(verb, recipe, overrides, why)
        problem = base_problem(folder)
        if problem:
            raise UserError(f"the rebuilt {name} in {folder} is unusable: {problem}", "report this as a bug")
    return folder / "model"


def base_problem(folder: Path) -> str | None:
    """Why a pretrained run folder cannot be used (None: it can): the summary, config, tokenizer and
    weights must be there, and the weights' sha256 must be the one the run recorded."""
    model = Path(folder) / "model"
    try:
        summary = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "no readable summary.json"
    for need in ("config.json", "tokenizer.json", "model.safetensors"):
        if not (model / need).is_file():
            return f"model/{need} is missing"
    if hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest() != summary.get("model_sha256"):
        return "model/model.safetensors differs from the sha256 recorded in summary.json"
    return None
