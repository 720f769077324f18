"""One decoding configuration per run (labcli.serving.decoding): derived from the run's config.yaml with the
evaluation's own Translator, or read from RUN/decoding.json; the scores shown are the ones of that decoding."""

from __future__ import annotations

import json

import yaml
from tiny_run import build_tokenizer

from labcli.serving import decoding

SUMMARY = {"model": "tiny-mbart", "method": "full", "bleu": 1.0, "chrf++": 2.0, "ter": 99.0,
           "scores": {"greedy": {"by_domain": {"all": {"n": 100, "bleu": 1.0, "chrf++": 2.0, "ter": 99.0}}},
                      "beam4": {"by_domain": {"all": {"n": 100, "bleu": 1.5, "chrf++": 2.5, "ter": 98.0}}}}}


def newari_run(tmp_path, **cfg):
    build_tokenizer(tmp_path / "model", "new_NP")
    config = {"verb": "finetune", "recipe": "newari", "prompt": "Translate: {en}\nNewari:", "max_source_len": 40,
              "max_target_len": 24, "tgt_lang": "new_NP", "eval": {"beams": [1, 4], "no_repeat_ngram_size": 3}, **cfg}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    return tmp_path


def test_a_runs_decoding_is_its_evaluations(tmp_path):
    run = newari_run(tmp_path)
    how = decoding.of_run(run, "seq2seq")
    g = how["generate"]
    assert (how["num_beams"], how["scores"], how["max_source_len"], how["prompt"]) == (1, "greedy", 40, None)
    assert g["num_beams"] == 1 and g["do_sample"] is False and g["max_new_tokens"] == 24 and g["no_repeat_ngram_size"] == 3
    tok = decoding.load_tokenizer(run / "model")
    assert g["forced_bos_token_id"] == tok.convert_tokens_to_ids("new_NP")  # the target language token, as evaluated
    assert json.loads(json.dumps(how)) == how  # it travels as JSON (Space, TorchServe's .mar, the ONNX bundle)
    card = decoding.card(SUMMARY, how, run.name)
    assert card["scores"] == {"BLEU": 1.0, "chrF++": 2.0, "TER": 99.0} and "100 sentences, greedy" in card["scores_note"]
    assert "no repeated 3-grams" in card["scores_note"] and "at most 24 new tokens" in card["scores_note"]


def test_beam_only_runs_decode_with_beams_and_show_those_scores(tmp_path):
    how = decoding.of_run(newari_run(tmp_path, eval={"beams": [4], "no_repeat_ngram_size": 0}), "seq2seq")
    assert how["num_beams"] == 4 and how["generate"]["num_beams"] == 4 and how["scores"] == "beam4"
    assert decoding.scores(SUMMARY, how) == ({"BLEU": 1.5, "chrF++": 2.5, "TER": 98.0}, 100)


def test_decoding_json_wins_and_a_length_override_drops_the_scores(tmp_path):
    run = newari_run(tmp_path)
    saved = {"task": "seq2seq", "num_beams": 1, "scores": "greedy", "prompt": None, "max_source_len": 40, "src_lang": None,
             "generate": {"num_beams": 1, "do_sample": False, "max_new_tokens": 30, "no_repeat_ngram_size": 2}}
    (run / "decoding.json").write_text(json.dumps(saved))
    assert decoding.of_run(run, "seq2seq")["generate"]["no_repeat_ngram_size"] == 2
    short = decoding.of_run(run, "seq2seq", max_new_tokens=5)
    assert short["generate"]["max_new_tokens"] == 5 and short["scores"] is None
    assert decoding.scores(SUMMARY, short)[1] is None


def test_a_model_that_is_not_a_run_decodes_greedily(tmp_path):
    assert decoding.of_run(None, "causal-lm")["generate"] == {"num_beams": 1, "do_sample": False, "max_new_tokens": 32}
    (tmp_path / "model").mkdir()
    assert decoding.of_run(tmp_path, "seq2seq", max_new_tokens=7)["generate"]["max_new_tokens"] == 7
    assert decoding.describe(decoding.plain("seq2seq", 7)) == "greedy, at most 7 new tokens"


def test_encode_follows_the_prompt_or_truncates_the_source(tmp_path):
    tok = build_tokenizer(tmp_path, None)
    causal = {**decoding.plain("causal-lm"), "prompt": "{en} ="}
    assert decoding.encode(tok, ["hello world"], causal, None)["input_ids"][0] == tok("hello world =", add_special_tokens=False)["input_ids"]
    short = {**decoding.plain("seq2seq"), "max_source_len": 2}
    assert len(decoding.encode(tok, ["how are you my name is ram"], short, None)["input_ids"][0]) == 2
