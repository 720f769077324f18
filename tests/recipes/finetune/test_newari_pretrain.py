"""The pretrained base: its cache key (config, data, seed), a damaged cache is rebuilt, and a tiny
pretrain -> QLoRA run end to end (slow)."""

import hashlib
import json

import pytest

from labcli.recipes.finetune import newari

TINY_PRETRAIN = ["train.max_steps=2", "train.batch_size=4", "train.micro_batch_size=4", "train.eval_every=0",
                 "train.save_every=0", "train.tensorboard=false", "dev_instances=4", "extra_english=[sms]"]


def key(tmp_path, tsv: str | None = None, **changes):
    from labcli.data.newari import load_pairs

    cfg = newari.Config(**changes)
    return newari.pretrain_overrides(cfg, load_pairs(tsv))


def test_cache_key_follows_config_data_and_seed(tmp_path):
    base = key(tmp_path)
    assert key(tmp_path) == base, "the key must be stable"
    assert key(tmp_path, seed=1) != base
    assert key(tmp_path, vocab_size=3000) != base
    assert key(tmp_path, preset={"d_model": 64}) != base
    assert key(tmp_path, pretrain=["train.max_steps=5"]) != base
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("en\tnew\tdomain\nhello\tज्वजलपा\tconversation\n", encoding="utf-8")
    one = key(tmp_path, str(tsv), data=str(tsv))
    tsv.write_text("en\tnew\tdomain\nhello\tज्वजलपा!\tconversation\n", encoding="utf-8")
    assert key(tmp_path, str(tsv), data=str(tsv)) != one, "same file name, other data: another base"


def _saved_base(folder):
    """A real (tiny) saved model + tokenizer and the summary a pretrain run writes."""
    from transformers import MBartConfig, MBartForConditionalGeneration

    from labcli.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["hello world", "ज्वजलपा"], 120)
    model = MBartForConditionalGeneration(MBartConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1,
                                                      encoder_attention_heads=2, decoder_attention_heads=2,
                                                      encoder_ffn_dim=16, decoder_ffn_dim=16))
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    sha = hashlib.sha256((folder / "model" / "model.safetensors").read_bytes()).hexdigest()
    (folder / "summary.json").write_text(json.dumps({"model_sha256": sha}))


def test_a_damaged_cached_base_is_named_not_loaded(tmp_path, lab_home):
    from labcli.models.presets import base_problem

    _saved_base(tmp_path)
    assert base_problem(tmp_path) is None
    weights = tmp_path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert "differs from the sha256" in base_problem(tmp_path)
    (tmp_path / "model" / "tokenizer.json").unlink()
    assert base_problem(tmp_path) == "model/tokenizer.json is missing"
    (tmp_path / "summary.json").write_text("{not json")
    assert base_problem(tmp_path) == "no readable summary.json"


def test_the_pretrained_preset_is_not_built_as_a_random_model(lab_home):
    from labcli.errors import UserError
    from labcli.models import load_model

    with pytest.raises(UserError, match="trained base, built by `lab finetune newari-pretrain`"):
        load_model("tiny-mbart-pretrained", "seq2seq", tokenizer_texts=lambda: ["a b", "क ख"], vocab_size=120)


@pytest.mark.slow
def test_missing_or_bad_cached_base_is_rebuilt(tmp_path, capsys, monkeypatch):
    """Missing: built once; then cached; a damaged copy is rebuilt, never loaded (a missing file: the fast test
    above shows base_problem names it, and the same rebuild path follows)."""
    from labcli.models.presets import base_problem, pretrained_base

    monkeypatch.setenv("LAB_HOME", str(tmp_path / "home"))  # "building it once" must not depend on other tests

    overrides = ["preset={d_model: 16, encoder_ffn_dim: 16, decoder_ffn_dim: 16}", "vocab_size=300", *TINY_PRETRAIN]
    model = pretrained_base("tiny-mbart-pretrained", overrides, "test base")
    run_dir = model.parent
    assert base_problem(run_dir) is None and "building it once" in capsys.readouterr().out
    assert pretrained_base("tiny-mbart-pretrained", overrides, "test base") == model
    assert "the cached" in capsys.readouterr().out
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated: a killed copy, a full disk
    assert pretrained_base("tiny-mbart-pretrained", overrides, "test base") == model
    out = capsys.readouterr().out
    assert "unusable (model/model.safetensors differs" in out and "building it once" in out
    assert base_problem(run_dir) is None


@pytest.mark.slow
def test_tiny_pretrain_then_qlora_end_to_end(run_lab, tmp_path):
    """`lab finetune newari` on the pretrained preset: builds the base once, quantizes it, finetunes,
    scores held-out sentences with both decodings, the dictionary baseline and the word diagnostic."""
    pretrain = "pretrain=[" + ",".join(json.dumps(o) for o in TINY_PRETRAIN) + "]"  # YAML list of strings
    args = ["finetune", "newari", "--method", "qlora", "train.max_steps=3", "train.batch_size=8",
            "train.micro_batch_size=8", "train.eval_every=0", "train.tensorboard=false", "eval.max_examples=10",
            "vocab_size=600", "max_target_len=8", "eval.baseline=true", pretrain]
    home = {"LAB_HOME": str(tmp_path / "home")}  # its own cache: "building it once" must not depend on other tests
    first = run_lab(*args, "--output", str(tmp_path / "a"), env=home).stdout
    assert "building it once with `lab finetune newari-pretrain seed=0 vocab_size=600 data_digest=" in first
    s = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert s["model"] == "tiny-mbart-pretrained" and s["method"] == "qlora" and "prerequisites" in s["base"]
    assert set(s["scores"]) == {"greedy", "greedy-nr3"} and s["split"] == "test"
    assert set(s["scores"]["greedy"]["by_domain"]) == {"all", "conversation", "general"}
    assert s["dictionary"]["by_domain"]["all"]["n"] == 10 and s["unseen_words"]["entries"] == 10  # n: distinct words
    assert 0 <= s["stopped"] <= 1 and 0 <= s["loops"] <= 1
    assert "chrF++" in first and "dictionary (word by word)" in first and "unseen single words" in first
    assert [r["system"] for r in s["table"]] == ["dictionary (word by word)", "base before finetuning (greedy)",
                                                 "qlora: greedy, no_repeat_ngram_size 0",
                                                 "qlora: greedy, no_repeat_ngram_size 3"]
    gen = json.loads((tmp_path / "a" / "model" / "generation_config.json").read_text())
    assert gen["forced_bos_token_id"] is not None, "served models must start with <new> as in training"
    second = run_lab(*args, "--output", str(tmp_path / "b"), env=home).stdout
    assert "the cached `lab finetune newari-pretrain" in second and "building" not in second
