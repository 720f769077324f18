"""The LM planner: completions are read into (reasons, subgoal); an OpenAI-compatible endpoint is
called over real HTTP (a stdlib server answering /v1/completions here); a dead URL is one error."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from labcli.errors import UserError
from labcli.rl.agents import lm_planner


def test_completions_are_parsed():
    assert lm_planner.parse_completion(" think: need the key; the key is here\nsubgoal: take key") == (
        "need the key; the key is here", "take key")
    assert lm_planner.parse_completion(" think: rambling without an answer")[1] is None
    assert lm_planner.completion(["a", "b"], "go east") == " think: a; b\nsubgoal: go east"


class Completions(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        choices = [{"index": i, "text": f" think: prompt {i}\nsubgoal: go to {p.split()[-1]}"} for i, p in enumerate(body["prompt"])]
        data = json.dumps({"choices": choices[::-1]}).encode()  # out of order, as servers may answer
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_an_openai_compatible_endpoint_proposes_in_order_and_is_cached():
    server = HTTPServer(("127.0.0.1", 0), Completions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lm, info = lm_planner.load(lm_planner.LMConfig(model=f"http://127.0.0.1:{server.server_port}"), [], None, 0)
        proposals = lm.propose(["room: attic", "room: cellar", "room: attic"])
        assert [p.subgoal for p in proposals] == ["go to attic", "go to cellar", "go to attic"]
        assert lm.calls == 2 and info["kind"] == "OpenAI-compatible endpoint"
    finally:
        server.shutdown()


def test_a_dead_endpoint_is_one_error():
    lm, _ = lm_planner.load(lm_planner.LMConfig(model="http://127.0.0.1:9"), [], None, 0)
    with pytest.raises(UserError, match="no completions"):
        lm.propose(["goal: x"])


@pytest.mark.slow
def test_a_local_model_folder_is_the_planner(tmp_path, lab_home):
    """`lm.model=FOLDER` (a save_pretrained causal LM; a hub id takes the same from_pretrained path)
    is used as is: batched greedy proposals, deterministic, each prompt generated once."""
    from labcli.models import load_model

    loaded = load_model("tiny-gpt2", "causal-lm", seed=0)
    loaded.model.save_pretrained(tmp_path / "lm")
    loaded.tokenizer.save_pretrained(tmp_path / "lm")
    lm, info = lm_planner.load(lm_planner.LMConfig(model=str(tmp_path / "lm"), max_new_tokens=8), [], None, 0)
    assert info == {"lm": str(tmp_path / "lm"), "kind": "pretrained causal LM, used as is"}
    first = lm.propose(["goal: take key\n", "goal: open door\n", "goal: take key\n"])
    assert lm.calls == 2 and first[0] == first[2] and all(isinstance(p.text, str) and p.text for p in first)
    again = lm_planner.load(lm_planner.LMConfig(model=str(tmp_path / "lm"), max_new_tokens=8), [], None, 0)[0]
    assert [p.text for p in again.propose(["goal: take key\n", "goal: open door\n"])] == [p.text for p in first[:2]]
