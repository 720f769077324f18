"""Tools: the calculator evaluates only arithmetic, Toolformer's call format and filter, retrieval, ReAct."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.errors import UserError
from labcli.reasoning import tools


@pytest.mark.parametrize("expr, out", [("3 * 4", "12"), ("(12 + 30) / 7", "6"), ("10 / 4", "2.50"), ("-2 - 3", "-5"),
                                       ("1 / 3", "0.33"), ("7", "7")])
def test_calculator_evaluates_arithmetic(expr, out):
    assert tools.calculator(expr) == out


@pytest.mark.parametrize("expr", ["__import__('os')", "2 ** 10", "x + 1", "1 / 0", "", "[1]", "9e999 * 9e999"])
def test_calculator_refuses_anything_else_without_raising(expr):
    assert tools.calculator(expr).startswith("error:")


def test_find_execute_and_strip_calls():
    text = "She has [Calculator(3 * 4)] apples and [Calculator(10 / 4) -> 2.50] pears [Weather(x)]."
    calls = tools.find_calls(text)
    assert [(c.tool, c.arg, c.result) for c in calls] == [("Calculator", "3 * 4", None), ("Calculator", "10 / 4", "2.50"),
                                                          ("Weather", "x", None)]
    done = tools.execute(text, tools.registry())
    assert done == "She has [Calculator(3 * 4) -> 12] apples and [Calculator(10 / 4) -> 2.50] pears [Weather(x)]."
    assert tools.strip_calls(done) == "She has  apples and  pears ."
    assert calls[0].text(with_result=False) == "[Calculator(3 * 4)]"
    assert tools.find_calls(done)[0].text() == "[Calculator(3 * 4) -> 12]"


def test_call_weights_follow_max_0_1_minus_0_2t():
    w = tools.call_weights(8)
    raw = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0, 0, 0])
    assert np.allclose(w, raw / raw.sum()) and w[5:].sum() == 0
    assert tools.weighted_loss([3.0, 3.0, 3.0]) == pytest.approx(3.0)  # weights sum to 1
    # only the first five tokens after the call count
    assert tools.weighted_loss([1, 1, 1, 1, 1, 100, 100]) == pytest.approx(1.0)


def test_filter_compares_against_the_smaller_of_the_two_baselines():
    assert tools.keep_call(loss_without=3.0, loss_call_no_result=2.5, loss_with_result=1.5, tau=1.0)
    assert not tools.keep_call(loss_without=3.0, loss_call_no_result=2.0, loss_with_result=1.5, tau=1.0)
    assert not tools.keep_call(2.0, 5.0, 1.2, tau=1.0)  # "no call" is already good: the call does not help enough


def test_retriever_finds_the_passage_about_the_query():
    passages = ["The Nile is the longest river in Africa.", "Mount Everest is the highest mountain.",
                "Kathmandu is the capital of Nepal."]
    r = tools.Retriever(passages)
    assert r.search("what is the capital of Nepal?") == [passages[2]]
    assert r.search("highest mountain", k=2)[0] == passages[1]
    assert tools.registry(passages)["Search"]("longest river") == passages[0]
    with pytest.raises(UserError):
        tools.Retriever([])


def test_retrieval_over_the_shipped_text():
    passages = tools.shipped_passages("test")  # the smaller split keeps this test fast; train has 5,515 facts
    assert len(passages) > 500 and len(set(passages)) == len(passages)
    search = tools.registry(passages)["Search"]
    assert search("How many people live in Albany, GA?") == "Albany, GA has around 75,000 people"
    assert search.arg == "query" and tools.registry()["Calculator"].arg == "expression"


def test_react_runs_tools_until_the_final_answer():
    script = iter(["Thought: I need to multiply.\nAction: Calculator[12 * 7]\nObservation: (hallucinated)",
                   "Thought: now add.\nAction: Calculator[84 + 16]\n", "Final Answer: 100"])
    trace = tools.react(lambda prompt: next(script), tools.registry(), "What is 12 * 7 + 16?")
    assert trace.answer == "100"
    assert trace.steps == [("Calculator", "12 * 7", "84"), ("Calculator", "84 + 16", "100")]
    assert "(hallucinated)" not in trace.prompt and "Observation: 84\n" in trace.prompt


def test_react_reports_unknown_tools_and_stops_without_an_action():
    script = iter(["Action: Weather[Paris]", "I do not know."])
    trace = tools.react(lambda prompt: next(script), tools.registry(), "Weather?")
    assert trace.answer is None and trace.steps[0][2].startswith("error: unknown tool Weather")


@pytest.mark.slow  # imports transformers and trains a tokenizer: seconds
def test_call_losses_score_the_same_tokens_with_the_call_prepended(lab_home):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from labcli.models.tokenizer import train_tokenizer

    texts = ["Ava has 3 * 4 = 12 apples.", "[Calculator(3 * 4) -> 12] Ben has 5 + 6 = 11 coins."] * 20
    tok = train_tokenizer(texts, 120)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)).eval()
    text, position = "Ava has 3 * 4 = 12 apples.", len("Ava has 3 * 4 = ")
    nll = tools.continuation_nll(model, tok, "<s>", text, position)
    after = tok(text[position:], add_special_tokens=False)["input_ids"]
    assert len(nll) == len(after)
    # the same numbers from one plain forward pass over the concatenated ids
    ids = tok("<s>", add_special_tokens=False)["input_ids"] + tok(text[:position], add_special_tokens=False)["input_ids"] + after
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    start = len(ids) - len(after)
    manual = [-logp[start - 1 + k, t].item() for k, t in enumerate(after)]
    assert np.allclose(nll, manual, atol=1e-5)
    l_none, l_empty, l_full = tools.call_losses(model, tok, text, position, ("Calculator", "3 * 4", "12"), bos="<s>")
    assert l_none == pytest.approx(tools.weighted_loss(nll))
    assert len({round(l_none, 6), round(l_empty, 6), round(l_full, 6)}) == 3  # the prefix changes the scores


def test_generate_with_tools_inserts_results_when_the_model_writes_the_arrow():
    chunks = iter(["Ava has [Calculator(12 * 7) ->", " 84 apples and [Calculator(84 + 16) ->", " so 100 in all.", "unused"])
    seen = []

    def next_text(text):
        seen.append(text)
        return next(chunks)

    out = tools.generate_with_tools(next_text, "Q: ... A: ", tools.registry())
    assert out == "Ava has [Calculator(12 * 7) -> 84] 84 apples and [Calculator(84 + 16) -> 100] so 100 in all."
    assert seen[1].endswith("[Calculator(12 * 7) -> 84]")  # the model continues after the inserted result
    assert len(seen) == 3  # no call open after the third chunk: decoding stops


@pytest.mark.slow  # imports transformers: seconds
def test_batched_call_losses_equal_the_single_ones_and_inline_writes_the_call_at_the_position():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from labcli.models.tokenizer import char_tokenizer

    text, position = "Ava has 37 apples. 37 + 48 = 85. Answer: 85.", len("Ava has 37 apples. 37 + 48 = ")
    tok = char_tokenizer([text, "[Calculator(0-+*/9) -> ]"])
    assert tok(text, add_special_tokens=False)["input_ids"][:3] == [tok.convert_tokens_to_ids(c) for c in "Ava"]
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=16, n_layer=1, n_head=2)).eval()
    calls = [("Calculator", "37 + 48", "85"), ("Calculator", "37 * 48", "1776")]
    none, empty, full = tools.call_losses_batch(model, tok, text, position, calls, bos="<s>")
    for i, call in enumerate(calls):
        assert np.allclose((none, empty[i], full[i]), tools.call_losses(model, tok, text, position, call, bos="<s>"), atol=1e-5)
    # inline: the same scores as the prefix computation on the text with the call written in
    inline_none, _, inline_full = tools.call_losses_batch(model, tok, text, position, calls, bos="<s>", inline=True)
    written = text[:position] + tools.format_call(*calls[1]) + " " + text[position:]
    want = tools.call_losses(model, tok, written, position + len(tools.format_call(*calls[1])) + 1, calls[1], bos="<s>")[0]
    assert inline_full[1] == pytest.approx(want, abs=1e-5) and inline_none == pytest.approx(none, abs=1e-5)


@pytest.mark.slow  # trains a one-layer model to write a call: seconds
def test_batched_tool_decoding_runs_the_tool_when_the_arrow_is_written():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from labcli.models.tokenizer import char_tokenizer

    prompt, completion = "<s>Q\n", "[Calculator(2 + 3) -> 5] 5.</s>"
    tok = char_tokenizer(["Q\n[Calculator(2 + 3) -> 5] 5.7"])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=1, n_head=2))
    ids = torch.tensor([tok(prompt + completion, add_special_tokens=False)["input_ids"]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):  # memorise the one text
        opt.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
    seven = {"Calculator": tools.Tool("Calculator", "always 7", lambda arg: "7")}
    texts, calls = tools.generate_with_tools_batch(model, tok, [prompt, prompt], seven, max_new_tokens=40)
    assert calls == [1, 1] and texts[0].startswith("[Calculator(2 + 3) -> 7]")  # the tool's result, not the memorised 5
    texts, calls = tools.generate_with_tools_batch(model, tok, [prompt], None, max_new_tokens=40)
    assert calls == [0] and texts[0] == "[Calculator(2 + 3) -> 5] 5."  # no tool: the model writes the result itself
