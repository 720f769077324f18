"""full/LoRA/QLoRA preparation: 4-bit bases really are NF4 Params4bit, only adapters train, merges are exact."""

import pytest
import torch

from labcli.models import LoraSettings, load_model, prepare_for_method
from labcli.models.peft_prep import merged_for_export

TEXTS = ["hello world", "जिगु नां एलेक्स खः ।", "how are you", "छ गथे च्वं ?"] * 20


def tiny(task="seq2seq", **kw):
    name = "tiny-mbart" if task == "seq2seq" else "tiny-gpt2"
    return load_model(name, task, tokenizer_texts=lambda: TEXTS, vocab_size=200, seed=0, **kw)


def batch(tok):
    enc = tok(["hello world", "how are you"], text_target=["छ गथे", "जिगु नां"], return_tensors="pt", padding=True)
    enc["labels"][enc["labels"] == tok.pad_token_id] = -100
    return enc


def test_qlora_base_is_nf4_and_only_lora_trains(lab_home):
    loaded = tiny(quantize_4bit=True)
    loaded.model.eval()  # an eval-mode forward first (the untrained baseline) must not break training
    with torch.no_grad():
        loaded.model(**batch(loaded.tokenizer))
    model, report = prepare_for_method(loaded.model, "qlora", LoraSettings(r=4), "seq2seq")
    linears = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert linears and all(type(m.weight).__name__ == "Params4bit" for m in linears)
    assert all(m.weight.quant_type == "nf4" and m.weight.compress_statistics for m in linears)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert report["trainable_params"] < report["total_params"]
    model.train()
    loss = model(**batch(loaded.tokenizer)).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("method,tolerance", [("lora", 1e-5), ("qlora", 1e-4)])
def test_merged_model_matches_adapter_model(lab_home, method, tolerance):
    """The exported (merged) model computes what the adapter model computes; QLoRA merges into the
    NF4 base as the 4-bit forward sees it, hence fp32 rounding in a slightly larger tolerance."""
    loaded = tiny(quantize_4bit=method == "qlora")
    model, _ = prepare_for_method(loaded.model, method, LoraSettings(r=4, dropout=0.0), "seq2seq")
    with torch.no_grad():  # make the adapters non-trivial
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    enc = batch(loaded.tokenizer)
    with torch.no_grad():
        before = model(**enc).logits
        merged = merged_for_export(model, method)
        after = merged(**enc).logits
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert not any(type(m).__name__ == "Linear4bit" for m in merged.modules())
    assert (before - after).abs().max().item() < tolerance


def test_train_embeddings_adds_only_the_embedding_matrix(lab_home):
    loaded = tiny(quantize_4bit=True)
    model, report = prepare_for_method(loaded.model, "qlora", LoraSettings(r=4, train_embeddings=True), "seq2seq")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert [n for n in trainable if "lora_" not in n] == [n for n in trainable if "shared" in n or "embed" in n]
    assert any("shared" in n or "embed" in n for n in trainable)


@pytest.mark.slow
def test_lora_run_is_the_same_in_every_process(run_lab, tmp_path):
    """Same seed, two processes with different string hashing: identical adapters, so identical losses and grads.

    Regression: the RNG state after loading a model from a folder differs per process, and the LoRA A
    matrices were drawn from it (a newari QLoRA demo's chrF++ moved 8.1 -> 9.5 between two fresh clones).
    """
    import json

    args = ["finetune", "tiny-lm", "--method", "lora", "train.max_steps=2", "train.batch_size=4", "train.micro_batch_size=4",
            "train.eval_every=0", "train.save_every=0", "train.tensorboard=false", "block_size=32", "vocab_size=300"]
    runs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"hash{hash_seed}"
        run_lab(*args, "--output", str(out), env={"PYTHONHASHSEED": hash_seed})
        runs.append([{k: r[k] for k in ("step", "loss", "grad_norm")} for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                     if "grad_norm" in r])
    assert runs[0] == runs[1] and len(runs[0]) == 2
