"""A Kosmos-2 checkpoint (transformers' Kosmos2ForConditionalGeneration + its processor) as a grounder:
the same question the small grounding model answers, asked the way Kosmos-2 is asked.

For each scene: the prompt `<grounding><phrase> EXPRESSION</phrase>` with the image, greedy
generation, the generated text parsed by the processor's own `post_process_generation`; the
predicted box is the first box of the first grounded phrase (None when the model wrote no box).
Scenes are 32 x 32 pixels: they are scaled up (nearest neighbour, the shapes stay crisp) to the
processor's input size before its own preprocessing.
"""

from __future__ import annotations

from pathlib import Path

from labcli.errors import UserError

HINT = ("pass a folder made by save_pretrained holding a Kosmos-2 model and its processor, or a cached hub id "
        "such as microsoft/kosmos-2-patch14-224")


def check_model(name: str) -> list[str]:
    """Problems with `model=name` as a Kosmos-2 checkpoint, from its config alone (cheap)."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            return [f"model={name} is not a model folder (no config.json) (hint: {HINT})"]
    elif name.startswith(("/", ".", "~")) or name.count("/") != 1:
        return [f"model={name}: no such folder (hint: {HINT})"]
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        where = f"{name}/config.json" if path.exists() else f"hub id {name} (not in the local cache, or offline)"
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return [f"model={name}: cannot read {where}: {reason} (hint: {HINT})"]
    if config.model_type != "kosmos-2":
        return [f"model={name} is a '{config.model_type}' model, not Kosmos-2 (hint: {HINT})"]
    return []


def load(name: str, device="cpu"):
    """(model, processor) from a folder or hub id; one-line UserError when it is not Kosmos-2."""
    from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

    if problems := check_model(name):
        raise UserError(problems[0])
    try:
        processor = AutoProcessor.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UserError(f"model={name} has no loadable processor ({str(exc).strip().splitlines()[0][:160]})",
                        f"save the Kosmos-2 processor beside the model: processor.save_pretrained(FOLDER); {HINT}")
    if type(processor).__name__ != "Kosmos2Processor":
        raise UserError(f"model={name} has a {type(processor).__name__}, not a Kosmos2Processor", HINT)
    model = Kosmos2ForConditionalGeneration.from_pretrained(name).to(device).eval()
    return model, processor


def first_box(processor, generated_text: str):
    """The first box of the first grounded phrase in a generated text, by the processor's own parser."""
    _, entities = processor.post_process_generation(generated_text)
    for _, _, boxes in entities:
        if boxes:
            return tuple(float(v) for v in boxes[0])
    return None


def ground(model, processor, images, expressions: list[str], batch_size: int = 8, max_new_tokens: int = 12):
    """Predicted boxes (normalised x1, y1, x2, y2, or None) for images [N, 3, H, W] in [0, 1]."""
    return [first_box(processor, t) for t in generate(model, processor, images, expressions, batch_size, max_new_tokens)]


def generate(model, processor, images, expressions: list[str], batch_size: int = 8, max_new_tokens: int = 12) -> list[str]:
    """The decoded generations (prompt included, special tokens dropped) for images [N, 3, H, W] in [0, 1].

    A batch holds only prompts of the same token length, so nothing is padded: Kosmos-2's incremental
    decoding in transformers 5.24 numbers a new token's position without counting the left padding
    before it, so a padded row drifts from its unbatched generation after the first new token
    (tests/lib/models/test_kosmos2_grounding.py shows the batched and one-by-one texts agree)."""
    import numpy as np
    import torch
    from PIL import Image

    crop = getattr(processor.image_processor, "crop_size", None)
    side = int(crop["height"]) if crop is not None else 224
    device = next(model.parameters()).device
    prompts = [f"<grounding><phrase> {e}</phrase>" for e in expressions]
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(processor.tokenizer(p)["input_ids"]), []).append(i)
    texts: list[str] = [""] * len(prompts)
    for group in by_length.values():
        for lo in range(0, len(group), batch_size):
            rows = group[lo:lo + batch_size]
            pictures = [Image.fromarray((np.asarray(images[i]).transpose(1, 2, 0) * 255).round().astype(np.uint8)).resize(
                (side, side), Image.NEAREST) for i in rows]
            inputs = processor(text=[prompts[i] for i in rows], images=pictures, return_tensors="pt",
                               num_image_tokens=model.config.latent_query_num)
            with torch.no_grad():
                out = model.generate(pixel_values=inputs["pixel_values"].to(device), input_ids=inputs["input_ids"].to(device),
                                     attention_mask=inputs["attention_mask"].to(device),
                                     image_embeds_position_mask=inputs["image_embeds_position_mask"].to(device),
                                     max_new_tokens=max_new_tokens, do_sample=False)
            for i, text in zip(rows, processor.batch_decode(out, skip_special_tokens=True)):
                texts[i] = text
    return texts


def save_tiny(folder: Path, seed: int = 0) -> Path:
    """A tiny random Kosmos-2 with a working processor, saved with save_pretrained: the whole evaluation
    path without weights (offline tests). The tokenizer is a real XLM-RoBERTa (Unigram) tokenizer over
    the scenes' words and the letters; Kosmos2Processor adds its 1,035 tag and location tokens."""
    import torch
    from transformers import (
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
        XLMRobertaTokenizer,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from labcli import runs
    from labcli.models.grounding_vlm import VOCAB

    words = [w for w in VOCAB if w != "<pad>"]
    vocab = [(t, 0.0) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")]
    vocab += [("\u2581" + w, -1.0) for w in words] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz\u2581"]
    processor = Kosmos2Processor(CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                                 XLMRobertaTokenizer(vocab=vocab))
    torch.manual_seed(seed)
    config = Kosmos2Config(
        text_config={"vocab_size": len(processor.tokenizer), "embed_dim": 32, "layers": 2, "attention_heads": 2,
                     "ffn_dim": 64, "max_position_embeddings": 256},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        latent_query_num=8)
    model = Kosmos2ForConditionalGeneration(config)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    runs.replace_dir(Path(folder), write)
    return Path(folder)
