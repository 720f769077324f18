"""The grounded instruction parser: goals from objects and relations, one-line refusals, the LM path."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from labcli.errors import UserError
from labcli.sims.grounding import ask_endpoint, ground, lm_prompt, validate_proposal
from labcli.sims.scene import LAYOUTS, Scene, Thing

Z = LAYOUTS["franka"].travel_z


def scene() -> Scene:
    """By hand: two cubes (small red, large blue), a green ball, a blue bowl and a wall (Panda frame: x forward, y left)."""
    objects = [
        Thing("cube", (0.5, -0.2, 0.07), (0.02, 0.02, 0.02), 0.0, "red", "small"),
        Thing("cube", (0.6, 0.25, 0.085), (0.035, 0.035, 0.035), 0.0, "blue", "large"),
        Thing("ball", (0.45, 0.1, 0.088), (0.038,), 0.0, "green", "large"),
        Thing("bowl", (0.65, -0.1, 0.065), (0.065, 0.015), 0.0, "blue", "large"),
    ]
    wall = Thing("wall", (0.55, 0.0, 0.2), (0.08, 0.015, 0.15), 0.0)
    return Scene("franka", 0, objects, [wall], (0.5, 0.2, Z))


@pytest.mark.parametrize("text,target,goal", [
    ("move above the red cube", "small red cube", (0.5, -0.2, Z)),
    ("Reach the green ball.", "large green ball", (0.45, 0.1, Z)),
    ("put the gripper over the small block", "small red cube", (0.5, -0.2, Z)),
    # beside: the object's footprint radius plus a 6 cm gap, on the robot's left (+y) / behind (+x)
    ("go to the left of the blue bowl", "large blue bowl", (0.65, -0.1 + 0.065 + 0.06, Z)),
    ("go behind the sphere", "large green ball", (0.45 + 0.038 + 0.06, 0.1, Z)),
    ("move in front of the large blue cube", "large blue cube", (0.6 - np.hypot(0.035, 0.035) - 0.06, 0.25, Z)),
])
def test_goals_are_object_positions_plus_relation_offsets(text, target, goal):
    g = ground(text, scene())
    assert g.target == target
    assert np.allclose(g.goal, goal, atol=1e-9)
    assert g.avoid == []


def test_avoid_clause_names_the_scene_obstacle():
    for text in ("reach the green ball, avoiding the wall", "hover over the ball while avoiding the obstacle",
                 "go to the red cube without hitting the wall"):
        g = ground(text, scene())
        assert g.avoid == ["wall"] and g.target in ("large green ball", "small red cube")


@pytest.mark.parametrize("text,needle", [
    ("move above the purple cube", "could not ground 'the purple cube'"),  # not in the scene
    ("go to the cube", "ambiguous: small red cube / large blue cube"),
    ("go next to the red cube", "does not say which side"),
    ("pick up the red cube", "no gripper"),
    ("don't touch the red cube", "negated"),
    ("move above the banana", "could not ground 'banana'"),
    ("reach the red cube, avoiding the pillar", "no pillar to avoid"),
    ("go to the left and right of the red cube", "more than one relation"),
    ("go to the wall", "obstacles are steered around"),
    ("move above the red blue cube", "two colours"),
    ("go somewhere", "could not ground 'somewhere'"),
])
def test_refusals_are_one_line_naming_what_could_not_be_grounded(text, needle):
    with pytest.raises(UserError) as err:
        ground(text, scene())
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert "the scene has small red cube" in err.value.hint  # says what there is


def test_empty_instruction_is_refused():
    with pytest.raises(UserError, match="empty instruction"):
        ground("  ", scene())


def test_lm_proposals_are_validated_against_the_scene():
    good = '{"target": "large blue bowl", "relation": "left", "avoid": ["wall"]}'
    g = validate_proposal(f"Sure! {good}", "go left of the bowl", scene())
    assert np.allclose(g.goal, ground("go to the left of the blue bowl", scene()).goal) and g.avoid == ["wall"]
    for answer, needle in [
        ('{"target": "purple cube", "relation": "above"}', "not in the scene"),
        ('{"target": "small red cube", "relation": "under"}', "relation 'under'"),
        ('{"target": "small red cube", "avoid": ["table"]}', "not the scene's obstacles"),
        ("move the arm to the left", "no JSON goal"),
        ('{"target": "small red cube", }', "not valid JSON"),
    ]:
        with pytest.raises(UserError, match=needle):
            validate_proposal(answer, "x", scene())


def test_lm_prompt_lists_the_scene():
    prompt = lm_prompt("reach the ball", scene())
    assert "small red cube, large blue cube, large green ball, large blue bowl" in prompt and "Obstacles: wall" in prompt


def test_openai_compatible_endpoint_reply_is_read_and_validated():
    """ask_endpoint's request and reply parsing against a local HTTP server speaking the chat-completions shape."""
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"] = self.path
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = {"choices": [{"message": {"content": '{"target": "small red cube", "relation": "above", "avoid": []}'}}]}
            data = json.dumps(reply).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        answer = ask_endpoint(url, "my-model", lm_prompt("reach the red cube", scene()))
        assert seen["path"] == "/v1/chat/completions" and seen["body"]["model"] == "my-model"
        assert validate_proposal(answer, "reach the red cube", scene()).target == "small red cube"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(UserError, match="no chat completion"):
        ask_endpoint(url, "m", "hello", timeout=2)  # the server is gone


def tiny_json_lm(folder, pairs: dict[str, str], scn: Scene):
    """A 2-layer word-level GPT-2 built from a config and fitted to answer each instruction of `pairs`
    (behind the real prompt) with its JSON: a local model whose answers we know."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    prompts = {t: lm_prompt(t, scn) for t in pairs}
    words = ["<unk>", "<eos>"] + sorted({w for text in [*prompts.values(), *pairs.values()] for w in text.split()})
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=1, bos_token_id=1, pad_token_id=1))
    ids_p = [tokenizer(prompts[t])["input_ids"] for t in pairs]
    ids_a = [tokenizer(" " + a)["input_ids"] + [1] for a in pairs.values()]
    assert len({len(p) + len(a) for p, a in zip(ids_p, ids_a)}) == 1, "one batch: keep the pairs the same length"
    ids = torch.tensor([p + a for p, a in zip(ids_p, ids_a)])
    labels = torch.tensor([[-100] * len(p) + a for p, a in zip(ids_p, ids_a)])
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    answer = labels[:, 1:] != -100
    for _ in range(400):
        out = model(ids, labels=labels)
        if (out.logits[:, :-1].argmax(-1)[answer] == labels[:, 1:][answer]).all():
            break
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)


@pytest.mark.slow
def test_local_lm_goal_is_grounded_only_when_the_scene_has_it(tmp_path):
    """lm_propose on a local model that knows two answers: the one naming a scene object becomes that
    object's goal; the one naming an object the scene lacks is refused, not executed. Slow: fits the model."""
    from labcli.sims.grounding import lm_propose

    scn = scene()
    good = '{ "target" : " small red cube " , "relation" : " above " , "avoid" : [ " wall " ] }'
    bad = '{ "target" : " small pink cube " , "relation" : " above " , "avoid" : [ " wall " ] }'
    tiny_json_lm(tmp_path / "lm", {"reach the red cube": good, "reach the pink cube": bad}, scn)
    g, raw = lm_propose("reach the red cube", scn, str(tmp_path / "lm"))
    assert g.target == "small red cube" and g.avoid == ["wall"] and np.allclose(g.goal, (0.5, -0.2, Z))
    with pytest.raises(UserError, match="'small pink cube'.*not in the scene"):
        lm_propose("reach the pink cube", scn, str(tmp_path / "lm"))
    with pytest.raises(UserError, match="cannot load a causal LM"):
        lm_propose("reach the red cube", scn, str(tmp_path / "missing"))
