"""Shipped Newari data: readable, split deterministically without crossing English strings; bad TSVs fail clearly;
how the task routes it; the mBART denoising noise."""

import itertools

import pytest

from labcli.data.newari import load_pairs, read_tsv, split, split_of
from labcli.errors import UserError


def test_shipped_corpus_and_split():
    pairs = load_pairs(None)
    assert len(pairs) == 10132
    assert {p.domain for p in pairs} == {"conversation", "general", "lexicon", "software_ui"}
    parts = split(pairs)
    sizes = {k: len(v) / len(pairs) for k, v in parts.items()}
    assert 0.75 < sizes["train"] < 0.85 and 0.07 < sizes["test"] < 0.13
    seen = {}
    for name, rows in parts.items():
        for p in rows:
            assert seen.setdefault(p.en.lower().strip(), name) == name, "an English string crossed splits"
    assert split_of("Hello") == split_of("hello ")


@pytest.mark.parametrize("content,message", [
    (b"en\tnew\nhello\t\xe0\xa4\x95\n", "missing column(s) domain"),
    (b"en\tnew\tdomain\nhello\t\tgeneral\n", ":2: empty new side"),
    (b"en\tnew\tdomain\nok\t\xe0\xa4\x95\tgeneral\nbad\t\xff\xfe\tgeneral\n", ":3: not UTF-8"),
    (b"en\tnew\tdomain\nonly-one-field\n", ":2: expected 3 tab-separated fields"),
])
def test_bad_tsv_names_the_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        read_tsv(path)
    assert message in str(err.value) and "hint:" in str(err.value)


def test_files_as_editors_write_them_are_read(tmp_path):
    """UTF-8 with a byte-order mark, CRLF line ends, trailing spaces and no final newline (Excel, Notepad)."""
    plain = "en\tnew\tdomain\nhello\tज्वजलपा\tconversation\nthanks \tसुभाय्\tconversation"
    path = tmp_path / "windows.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + plain.replace("\n", "\r\n").encode("utf-8"))
    rows = read_tsv(path)
    assert [(r.en, r.new, r.domain) for r in rows] == [("hello", "ज्वजलपा", "conversation"), ("thanks", "सुभाय्", "conversation")]
    latin = tmp_path / "latin1.tsv"
    latin.write_bytes("en\tnew\tdomain\ncafé\tx\tgeneral\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.tsv:2: not UTF-8 text"):
        read_tsv(latin)


# ---------------------------------------------------------------- how the task uses the data


def test_task_splits_train_on_resources_and_test_on_sentences():
    from labcli.data.newari import task_splits

    pairs = load_pairs(None)
    s = task_splits(pairs)
    assert {p.domain for p in s.test} == {p.domain for p in s.dev} == {"conversation", "general"}
    assert {p.domain for p in s.test_words} == {p.domain for p in s.dev_words} == {"lexicon"}
    ui = [p for p in pairs if p.domain == "software_ui"]
    assert set(ui) <= set(s.train), "UI strings are training data, every split"
    held_out = s.dev + s.test + s.dev_words + s.test_words
    assert not {p.en.lower().strip() for p in held_out} & {p.en.lower().strip() for p in s.train}
    assert not {p.new for p in s.dev + s.test} & {p.new for p in s.train}, "a held-out sentence is a training target"
    dropped = len(pairs) - len(s.train) - len(held_out)
    assert 0 < dropped < 100, "only the few held-out pairs that also occur in training are dropped"


def test_monolingual_corpus_uses_train_pairs_and_shipped_english_only():
    from labcli.data.newari import task_splits
    from labcli.data.newari.monolingual import corpus, extra_english

    s = task_splits(load_pairs(None))
    texts = corpus(s.train)
    assert {p.new for p in s.train} == set(texts["new"])
    held_out = {p.en for p in s.dev + s.test} | {p.new for p in s.dev + s.test}
    assert not held_out & (set(texts["en"]) | set(texts["new"])), "held-out text in the pretraining corpus"
    assert len(texts["en"]) == len(set(texts["en"])) > len({p.en for p in s.train})
    sms = extra_english("sms")
    assert sms and not any(t.startswith("Free entry") for t in sms), "spam messages are left out"


# ---------------------------------------------------------------- denoising noise (mBART)


def test_poisson_sampler_mean_and_variance():
    import random

    from labcli.data.newari.denoising import poisson

    rng = random.Random(0)
    xs = [poisson(rng, 3.5) for _ in range(20000)]
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / len(xs)
    assert abs(mean - 3.5) < 0.06 and abs(var - 3.5) < 0.15


def test_span_masking_hides_35_percent_in_poisson_spans():
    import random

    from labcli.data.newari.denoising import MASK, mask_spans

    words = [f"w{i}" for i in range(200)]
    masked = total = 0
    lengths = []
    for seed in range(300):
        out, spans = mask_spans(words, random.Random(seed), 0.35, 3.5)
        hidden = {i for start, n in spans for i in range(start, start + n)}
        assert len(hidden) == sum(n for _, n in spans), "spans overlap"
        assert [w for w in out if w != MASK] == [w for i, w in enumerate(words) if i not in hidden]
        assert out.count(MASK) == len(spans), "each span is one mask token"
        assert all(not (a == b == MASK) for a, b in itertools.pairwise(out)), "two spans merged"
        masked, total = masked + len(hidden), total + len(words)
        lengths += [n for _, n in spans[:-1]] if spans else []  # the last span may be cut to fit
    assert abs(masked / total - 0.35) < 0.005
    assert abs(sum(lengths) / len(lengths) - 3.5) < 0.2
    assert 0 < lengths.count(0) / len(lengths) < 0.08, "zero-length spans (insertions) occur, ~e^-3.5"


def test_sentence_permutation_keeps_sentences_and_changes_order():
    import random

    from labcli.data.newari.denoising import NoiseSettings, noise, sentences

    text = "How are you? I am fine. जि लाय्‌ताः । Thanks!"
    parts = sentences(text)
    assert parts == ["How are you?", "I am fine.", "जि लाय्‌ताः ।", "Thanks!"]
    only_permute = NoiseSettings(mask_ratio=0.0)
    outs = [noise(text, random.Random(seed), only_permute) for seed in range(20)]
    assert all(sorted(sentences(o)) == sorted(parts) for o in outs)
    assert len(set(outs)) > 5
    assert noise("One sentence only.", random.Random(1), only_permute) == "One sentence only."


def test_instances_pack_neighbours_up_to_max_words():
    from labcli.data.newari.denoising import instances

    texts = ["a b c", "d e", "f g h i", "j " * 10]
    out = instances(texts, 5)
    assert out == ["a b c d e", "f g h i", "j j j j j"]


def test_denoising_examples_carry_the_language_token_and_mix_languages(lab_home):
    from labcli.data.newari.denoising import (
        LANG_TOKENS,
        SPECIAL_TOKENS,
        DenoisingSet,
        example,
    )
    from labcli.models.tokenizer import train_tokenizer

    by_language = {"en": [f"the cat sat on mat {i} . it slept" for i in range(20)],
                   "new": [f"भौचा फ्यतुत {i} । व द्यन" for i in range(20)]}
    tok = train_tokenizer(by_language["en"] + by_language["new"], 200, SPECIAL_TOKENS)
    ids = {lang: tok.convert_tokens_to_ids(t) for lang, t in LANG_TOKENS.items()}

    def encode(noised, original, lang):
        return {**example(tok, noised, original, ids[lang], 32), "lang": lang, "noised": noised}

    data = DenoisingSet(by_language, {"new": 0.25, "en": 0.75}, 1000, seed=3, encode=encode)
    first = data[0]
    assert first["labels"][0] == ids[first["lang"]] and first["labels"][-1] == tok.eos_token_id
    assert first["input_ids"][-1] == tok.eos_token_id and not set(ids.values()) & set(first["input_ids"])
    assert tok.convert_tokens_to_ids("<mask>") in [t for i in range(20) for t in data[i]["input_ids"]]
    share = sum(lang == "new" for lang, _ in data.items) / len(data)
    assert abs(share - 0.25) < 0.04
    again = DenoisingSet(by_language, {"new": 0.25, "en": 0.75}, 1000, seed=3, encode=encode)
    assert [again[i]["noised"] for i in range(50)] == [data[i]["noised"] for i in range(50)], "not deterministic"
    same = [k for k in range(len(data)) if data.items[k] == data.items[0]]
    assert len({data[k]["noised"] for k in same}) > 1, "each draw of an instance should get fresh noise"
