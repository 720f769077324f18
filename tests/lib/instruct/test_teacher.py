"""The endpoint teacher against a real local HTTP server speaking the OpenAI completions API, and the
Self-Instruct bootstrap driven through it (ROUGE-L rejection of a repeated instruction included)."""

from __future__ import annotations

import pytest

from labcli.errors import UserError
from labcli.instruct.teacher import EndpointTeacher, cut_at_stop


def test_endpoint_sends_the_sampling_settings_and_the_key(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    server["replies"] = ["first\n\nsecond", "other"]
    teacher = EndpointTeacher(server["url"], "some-model", key_env="MY_KEY")
    out = teacher.complete(["p1", "p2"], max_tokens=64, temperature=0.7, top_p=0.5, stop=["\n\n"], presence_penalty=2)
    assert [c.text for c in out] == ["first", "other"] and out[0].finish_reason == "stop"
    req = server["requests"][0]
    assert req["path"] == "/v1/completions" and req["auth"] == "Bearer sk-test"
    assert {k: req["body"][k] for k in ("model", "temperature", "top_p", "max_tokens", "presence_penalty")} == {
        "model": "some-model", "temperature": 0.7, "top_p": 0.5, "max_tokens": 64, "presence_penalty": 2}


def test_endpoint_errors_are_user_errors(server):
    server["status"] = 401
    with pytest.raises(UserError, match="HTTP 401"):
        EndpointTeacher(server["url"], "m").complete(["p"], max_tokens=1, temperature=0, top_p=1, stop=[])
    with pytest.raises(UserError, match="no model name"):
        EndpointTeacher(server["url"], "")


def test_cut_at_stop_takes_the_earliest_stop():
    assert cut_at_stop("a 16. b\n\nc", ["\n\n", "16."]) == ("a ", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


@pytest.mark.slow  # imports rouge-score (all of nltk)
def test_bootstrap_through_an_endpoint_keeps_new_and_rejects_near_copies(server):
    import random

    from labcli.data import self_instruct as data
    from labcli.instruct.self_instruct import bootstrap

    seeds = [t["instruction"] for t in data.seed_tasks()]
    server["replies"] = [" Name three rivers that flow through Germany.\n10. " + seeds[0] + "\n11. Plot a simple curve.",
                         " Name three rivers that flow through Germany!\n10. Summarize the story of a novel in two lines."]
    res = bootstrap(EndpointTeacher(server["url"], "m"), seeds, 3, rng=random.Random(0), batch_size=1, max_rounds=3)
    assert [r["instruction"] for r in res.instructions] == ["Name three rivers that flow through germany.",
                                                           "Summarize the story of a novel in two lines."]
    assert res.rejected == {"ROUGE-L > 0.7": 2, "blacklisted word": 1} and res.rounds == 3
    prompt = server["requests"][1]["body"]["prompt"][0]
    assert prompt.startswith("Come up with a series of tasks:\n1. ") and prompt.endswith("\n9.")
    assert "Name three rivers that flow through germany." in prompt  # a generated instruction is shown again


def test_presence_penalty_hits_completion_tokens_once_each():
    import torch

    from labcli.instruct.teacher import PresencePenalty

    ids = torch.tensor([[5, 6, 7, 7, 8]])  # prompt 5, 6; completion 7, 7, 8
    scores = PresencePenalty(2.0, prompt_len=2)(ids, torch.zeros(1, 10))
    assert scores[0].tolist() == [0, 0, 0, 0, 0, 0, 0, -2.0, -2.0, 0]
