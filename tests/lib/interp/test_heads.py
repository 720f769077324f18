"""labcli.interp on constructed patterns and a small random model: scores, hooks (TransformerLens vs nnsight), lens, patching."""

import torch

from labcli.data.repeated_tokens import RepeatedTokens, copy_masks, corrupt
from labcli.interp import crosscheck, heads, lens, patching
from labcli.models.attn_only import AttnOnlyConfig, AttnOnlyTransformer


def model(seed=0):
    torch.manual_seed(seed)
    return AttnOnlyTransformer(AttnOnlyConfig(d_vocab=32, n_ctx=25, n_heads=2, d_model=32, d_head=8)).eval()


def test_scores_of_perfect_heads_are_one_and_of_uniform_heads_small():
    batch = RepeatedTokens(4, 6, 12, 32, seed=1).batch()
    tokens = batch["input_ids"]
    t = tokens.shape[1]
    target = heads.induction_targets(tokens)
    induction = torch.zeros(1, 4, 1, t, t)
    for b in range(4):
        for q in range(t):
            induction[0, b, 0, q, max(int(target[b, q]), 0)] = 1.0
    previous = torch.zeros(1, 4, 1, t, t)
    previous[..., 0, 0] = 1.0
    for q in range(1, t):
        previous[..., q, q - 1] = 1.0
    assert heads.induction_scores(induction, tokens).item() == 1.0
    assert heads.previous_token_scores(previous).item() == 1.0
    uniform = torch.ones(t, t).tril()
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(1, 4, 1, t, t)
    assert heads.induction_scores(uniform, tokens).item() < 0.3


def test_copy_masks_cover_the_two_copies():
    batch = RepeatedTokens(8, 4, 10, 32, seed=2).batch()
    first, second = copy_masks(batch)
    assert (first.sum(1) == batch["length"] - 1).all() and (second.sum(1) == batch["length"] - 1).all()
    tokens = batch["input_ids"]
    # a prediction in the repeat targets the same token as the one L positions earlier
    for b, q in second.nonzero().tolist():
        assert tokens[b, q + 1] == tokens[b, q + 1 - batch["length"][b]]


def test_corrupt_changes_one_first_copy_token_and_names_the_query():
    batch = RepeatedTokens(16, 6, 6, 32, seed=3).batch()
    bad = corrupt(batch, 32, seed=0, position=3)
    diff = (bad["input_ids"] != batch["input_ids"])
    assert (diff.sum(1) == 1).all() and (bad["answer"] != bad["wrong"]).all()
    rows = torch.arange(16)
    assert (batch["input_ids"][rows, bad["query"] + 1] == bad["answer"]).all()


def test_transformer_lens_hooks_and_nnsight_agree():
    m = model()
    tokens = RepeatedTokens(4, 6, 12, 32, seed=4).batch()["input_ids"]
    agree = crosscheck.agreement(m, tokens, [(1, 0)])
    assert agree["patterns_max_abs_diff"] < 1e-6 and agree["ablated_logits_max_abs_diff"] < 1e-5
    assert agree["ablation_changes_logits"] > 1e-3  # the ablation did something, so agreeing means something


def test_logit_lens_final_point_is_the_model_output():
    m = model()
    tokens = RepeatedTokens(2, 6, 12, 32, seed=5).batch()["input_ids"]
    readouts = lens.logit_lens(m, tokens)
    assert len(readouts) == 3
    assert torch.allclose(readouts[-1], m(tokens), atol=1e-5)


def test_patching_everything_restores_the_clean_run():
    m = model()
    batch = RepeatedTokens(8, 12, 12, 32, seed=6).batch()
    bad = corrupt(batch, 32, seed=1, position=5)
    result = patching.patch(m, batch["input_ids"], bad["input_ids"],
                            patching.logit_diff(bad["query"], bad["answer"], bad["wrong"]))
    # the residual stream before block 0 at the corrupted position carries the whole difference
    assert abs(result["resid_pre"][0, 5].item() - 1.0) < 1e-4
    assert result["heads"].shape == (2, 2)


def test_joint_head_patch_matches_transformer_lens_for_one_head_and_restores_all_for_every_head():
    m = model(1)
    batch = RepeatedTokens(8, 12, 12, 32, seed=7).batch()
    bad = corrupt(batch, 32, seed=2, position=4)
    metric = patching.logit_diff(bad["query"], bad["answer"], bad["wrong"])
    one_at_a_time = patching.patch(m, batch["input_ids"], bad["input_ids"], metric)["heads"]
    for layer, head in [(0, 1), (1, 0)]:
        joint = patching.patch_heads_together(m, batch["input_ids"], bad["input_ids"], [(layer, head)], metric)
        assert abs(joint - one_at_a_time[layer, head].item()) < 1e-4
    every = [(layer, head) for layer in range(2) for head in range(2)]
    # every head's output clean: the residual at the query (the clean token's embedding) is the clean run's
    assert abs(patching.patch_heads_together(m, batch["input_ids"], bad["input_ids"], every, metric) - 1.0) < 1e-4


def test_nnsight_is_imported_without_mounting_save_on_every_object():
    """nnsight's default mounts `.save` on every Python object, which broke TextWorld's jericho later
    in the same process ('method' object has no attribute 'argtypes'); lab's config turns it off."""
    from labcli.interp.crosscheck import nnsight

    nnsight()
    assert not hasattr(object(), "save")
