"""Our metric wrappers equal sacrebleu's own numbers; error-analysis counters are right on hand-made cases."""

import sacrebleu
from pytest import approx

from labcli.eval.translation import corpus_scores, scores_by
from labcli.eval.translation_errors import (
    analyse,
    analyse_one,
    length_bucket,
    repetition_loop,
)

HYPS = ["जिगु नां एलेक्स खः ।", "छ गथे च्वं ?", "the cat", ""]
REFS = ["जिगु नां एलेक्स खः ।", "छितः गथे च्वं ?", "भौचा", "लः"]


def test_corpus_scores_equal_sacrebleu():
    ours = corpus_scores(HYPS, REFS)
    assert ours["bleu"] == approx(round(sacrebleu.corpus_bleu(HYPS, [REFS]).score, 2))
    assert ours["chrf++"] == approx(round(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score, 2))
    assert ours["ter"] == approx(round(sacrebleu.corpus_ter(HYPS, [REFS]).score, 2))
    assert "nw:2" in ours["chrf++_signature"] and ours["n"] == 4


def test_zero_width_joiners_are_ignored_by_default():
    zwj = "क\u200dष"
    assert corpus_scores([zwj], ["कष"])["chrf++"] == 100.0


def test_scores_by_group_has_all_and_each_group():
    out = scores_by(["a", "a", "b", "b"], HYPS, REFS)
    assert set(out) == {"all", "a", "b"} and out["a"]["n"] == 2


def test_error_flags_on_hand_made_hypotheses():
    assert analyse_one("water", "", "लः")["empty"]
    copied = analyse_one("Hello there", "hello there", "ज्वजलपा")
    assert copied["copied_source"] and copied["latin_script"]
    assert analyse_one("x", "লঃ জল", "लः")["script_mixing"]  # Bengali letters
    assert not analyse_one("x", "लः 123 ?", "लः")["script_mixing"]
    assert analyse_one("x", "लः", "लः", unk_count=2)["unknown_tokens"]
    assert analyse_one("x", "लःलः", "लः")["length_ratio"] == 2.0
    assert repetition_loop("जि जि जि") and repetition_loop("क ख क ख क ख") and not repetition_loop("क ख ग क ख")


def test_analyse_counts_rates_and_worst():
    rows = [{"src": s, "ref": r, "hyp": h, "domain": d, "unk": 0}
            for s, r, h, d in [("water", "लः", "", "lexicon"), ("a cat", "भौचा", "a cat", "lexicon"),
                               ("How are you?", "छ गथे च्वं ?", "छ गथे च्वं ?", "conversation")]]
    out = analyse(rows, worst_n=1)
    assert out["counts"] == {"empty": 1, "copied_source": 1, "latin_script": 1}
    assert out["rates"]["empty"] == round(1 / 3, 4)
    assert [r["hyp"] for r in out["worst"]["lexicon"]] in ([""], ["a cat"])
    assert out["worst"]["conversation"][0]["chrf++"] == 100.0


def test_length_buckets():
    assert [length_bucket(s) for s in ("a", "a b", "a b c d", " ".join("x" * 20))] == [
        "1 word", "2-3 words", "4-7 words", "16+ words"]


def test_dictionary_baseline_word_by_word_on_hand_made_input():
    from labcli.eval.translation_baseline import WordByWord, transliterate

    lexicon = [("water", "लः"), ("water", "जल"), ("thank you", "सुभाय्"), ("I", "जि"), ("drink", "त्वने")]
    baseline = WordByWord(lexicon)
    # the longest phrase wins, the first gloss of a word wins, "." becomes the danda, names are transliterated
    assert baseline.translate_one("Thank you, I drink water.") == "सुभाय् , जि त्वने लः ।"
    assert baseline.translate_one("Alex drinks water?") == f"{transliterate('Alex')} {transliterate('drinks')} लः ?"
    assert transliterate("Alex") == "अलेक्स" and transliterate("2023") == "२०२३"
    assert WordByWord(lexicon, fallback="copy").translate_one("Alex drinks") == "Alex drinks"
    assert baseline.coverage(["I drink water", "Alex"]) == 3 / 4
