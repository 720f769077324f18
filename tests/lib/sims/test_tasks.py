"""The task language, and --llm: a local LM's answer goes through the same parser."""

from __future__ import annotations

import pytest

from labcli.errors import UserError
from labcli.sims.tasks import parse_task


def test_grammar_accepts_the_issue_example():
    steps = parse_task("home, then reach 0.5 0.1 0.4, then wave", 7)
    assert [(s.kind, s.args) for s in steps] == [("home", ()), ("reach", (0.5, 0.1, 0.4)), ("wave", ())]
    steps = parse_task("Move 0 0 0 -1.5 0 1.5 0; hold 0.5 then joint 4 -1 and wave 3", 7)
    assert [s.kind for s in steps] == ["move", "hold", "joint", "wave"]
    assert steps[2].args == (4.0, -1.0) and steps[3].args == (3.0,)


@pytest.mark.parametrize("text,needle", [
    ("home, then dance", "unknown task phrase 'dance'"),
    ("reach 0.5 0.1", "bad arguments"),
    ("move 1 2 3", "gives 3 joint angles"),
    ("joint 9 0.1", "no joint 9"),
    ("", "empty --task"),
])
def test_grammar_rejects_with_accepted_phrases(text, needle):
    with pytest.raises(UserError) as err:
        parse_task(text, 7)
    assert needle in str(err.value)
    if "unknown" in needle:
        assert "accepted phrases: home" in err.value.hint and "reach X Y Z" in err.value.hint


def tiny_task_lm(folder, pairs: dict[str, str]):
    """A 2-layer GPT-2 built from a config (nothing downloaded) and fitted to answer each instruction of
    `pairs` with its task string, behind the real prompt: a model whose right answer we know."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from labcli.sims.tasks import PHRASES, PROMPT

    words = ["<unk>", "<eos>", ","] + sorted({w for text in [*pairs, *pairs.values()] for w in text.replace(",", " ").split()})
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(",", behavior="isolated")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=256, n_embd=32, n_layer=2, n_head=2,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, eos_token_id=1, bos_token_id=1, pad_token_id=1))
    phrases = "\n".join(h for _, h in PHRASES.values())
    prompts = [tokenizer(PROMPT.format(phrases=phrases, text=t))["input_ids"] for t in pairs]
    answers = [tokenizer(" " + a)["input_ids"] + [tokenizer.eos_token_id] for a in pairs.values()]
    assert len({len(p) + len(a) for p, a in zip(prompts, answers)}) == 1, "one batch: keep the pairs the same length"
    ids = torch.tensor([p + a for p, a in zip(prompts, answers)])
    labels = torch.tensor([[-100] * len(p) + a for p, a in zip(prompts, answers)])  # learn only the answers
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    answer = labels[:, 1:] != -100
    for _ in range(300):
        out = model(ids, labels=labels)
        if (out.logits[:, :-1].argmax(-1)[answer] == labels[:, 1:][answer]).all():
            break  # greedy decoding now gives every answer token
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder)


@pytest.mark.slow
def test_llm_answer_is_the_task_it_parses_to(tmp_path):
    """--llm's code path (prompt, greedy decoding of the continuation only, first line) on a model
    that knows two answers: each instruction must come back as its own task and parse to its steps.
    Slow: fitting the model takes ~30 Adam steps (2-3 s of CPU)."""
    from labcli.sims.tasks import text_to_task

    pairs = {"go home and wave": "home, then wave", "reach to the middle": "reach 0.5 0.1 0.4"}
    tiny_task_lm(tmp_path / "llm", pairs)
    home = parse_task(text_to_task("go home and wave", str(tmp_path / "llm")), 7)
    reach = parse_task(text_to_task("reach to the middle", str(tmp_path / "llm")), 7)
    assert [(s.kind, s.args) for s in home] == [("home", ()), ("wave", ())]
    assert [(s.kind, s.args) for s in reach] == [("reach", (0.5, 0.1, 0.4))]
    with pytest.raises(UserError, match="no such model folder"):
        text_to_task("go home", str(tmp_path / "missing"))


def test_scene_phrases_are_grounded_and_the_grammar_still_works():
    from labcli.sims.demos import generate_task

    scene = generate_task("franka", 5).scene
    name = scene.objects[0].name
    steps = parse_task(f"home, then move above the {name}, avoiding the {scene.obstacles[0].kind}, then reach 0.5 0.1 0.4", 7, scene)
    assert [s.kind for s in steps] == ["home", "goal", "reach"]
    assert steps[1].text == f"move above the {name}, avoiding the {scene.obstacles[0].kind}"
    assert steps[1].args[:2] == pytest.approx(scene.objects[0].pos[:2]) and steps[2].args == (0.5, 0.1, 0.4)
    with pytest.raises(UserError, match="could not ground 'the purple banana'|could not ground 'banana'"):
        parse_task("move above the purple banana", 7, scene)
    with pytest.raises(UserError, match="has bad arguments") as err:
        parse_task(f"move above the {name}", 7)  # no scene: today's grammar only
    assert "with --scene N" in err.value.hint
