"""HRM and its controls: equal parameters, the one-step gradient (no backpropagation through the
inner steps), detached carried state, ACT halting shapes and slot replacement."""

import pytest
import torch

from labcli.models.hrm import HRM, HRMConfig, act_step, build, new_carry, solve_all

CFG = HRMConfig(vocab=7, cells=36, d_model=32, n_heads=4, layers=1, h_cycles=2, l_cycles=3)


def puzzles(k: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 7, (k, 36), generator=g), torch.randint(1, 7, (k, 36), generator=g)


def test_arms_have_equal_parameters():
    counts = {arm: sum(p.numel() for p in build(arm, CFG).parameters()) for arm in ("hrm", "looped-transformer", "transformer")}
    assert len(set(counts.values())) == 1, counts


def test_one_step_gradient_only_the_last_low_and_high_steps_keep_a_graph():
    torch.manual_seed(0)
    model = HRM(CFG)
    calls = {"L": [], "H": []}
    for name in calls:
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: calls[name].append(o.requires_grad))
    x = model.inputs(puzzles(4)[0])
    state, logits, q = model.segment(model.init_state(4, "cpu"), x)
    N, T = CFG.h_cycles, CFG.l_cycles
    assert calls["L"] == [False] * (N * T - 1) + [True]  # N*T low-level steps, only the last with a graph
    assert calls["H"] == [False] * (N - 1) + [True]
    assert all(not s.requires_grad for s in state)  # the carried state leaves the segment detached
    assert logits.shape == (4, 36, 7) and q.shape == (4,)


def test_one_step_gradient_equals_backprop_through_the_last_step_alone():
    """The gradient is that of the last L and H steps applied to the (constant) states the no-grad
    steps reached, and differs from full backpropagation through time."""
    torch.manual_seed(0)
    model = HRM(CFG)
    p = puzzles(3)[0]
    N, T = CFG.h_cycles, CFG.l_cycles

    def run(full: bool):
        model.zero_grad()
        x = model.inputs(p)
        z_H, z_L = model.init_state(3, "cpu")
        with torch.set_grad_enabled(full):
            for step in range(N * T - 1):
                z_L = model.L(z_L, z_H + x)
                if (step + 1) % T == 0:
                    z_H = model.H(z_H, z_L)
        z_L = model.L(z_L, z_H + x)
        z_H = model.H(z_H, z_L)
        model.outputs(z_H)[0].square().mean().backward()
        return model.L.blocks[0].qkv.weight.grad.clone()

    model.zero_grad()
    _, logits, _ = model.segment(model.init_state(3, "cpu"), model.inputs(p))
    logits.square().mean().backward()
    one_step = model.L.blocks[0].qkv.weight.grad.clone()
    assert torch.allclose(one_step, run(full=False), atol=1e-6)
    assert not torch.allclose(one_step, run(full=True), atol=1e-4)


@pytest.mark.parametrize("arm", ["hrm", "looped-transformer"])
def test_act_halting_shapes_and_max_segments(arm):
    torch.manual_seed(0)
    model = build(arm, CFG)
    carry = new_carry(model, 5, "cpu")
    assert carry.halted.all()  # every slot starts by taking a puzzle
    served = []

    def next_puzzles(k):
        served.append(k)
        return puzzles(k, seed=len(served))

    for segment in range(1, 4):
        carry, logits, q = act_step(model, carry, next_puzzles, max_segments=3, explore=0.0)
        assert logits.shape == (5, 36, 7) and q.shape == (5,) and carry.halted.shape == (5,)
        assert carry.halted.dtype == torch.bool and carry.steps.tolist() == [segment] * 5
        assert carry.halted.all() == (segment == 3)  # the halting head starts at -5: nobody halts before M
    assert served == [5]
    carry, _, _ = act_step(model, carry, next_puzzles, max_segments=3, explore=0.0)
    assert served == [5, 5] and carry.steps.tolist() == [1] * 5


def test_halted_slots_take_new_puzzles_and_fresh_state():
    torch.manual_seed(0)
    model = HRM(CFG)
    torch.nn.init.constant_(model.q_head.bias, 5.0)  # the halting head says halt
    carry = new_carry(model, 4, "cpu")
    carry, _, _ = act_step(model, carry, lambda k: puzzles(k), max_segments=8, explore=0.0)
    assert carry.halted.all() and carry.steps.tolist() == [1] * 4  # minimum of one segment without exploration
    carry.halted = torch.tensor([True, False, True, False])
    before = [s.clone() for s in carry.state]
    old = carry.puzzles.clone()
    new_p, _ = puzzles(2, seed=9)
    seen = {}

    def next_puzzles(k):
        seen["k"] = k
        return new_p, new_p

    original = model.segment

    def recording(state, x):
        seen["state"] = state
        return original(state, x)

    model.segment = recording
    carry, _, _ = act_step(model, carry, next_puzzles, max_segments=8, explore=0.0)
    assert seen["k"] == 2
    assert torch.equal(carry.puzzles[[0, 2]], new_p) and torch.equal(carry.puzzles[[1, 3]], old[[1, 3]])
    z0 = model.z0.expand(36 + 1, -1)
    for s_in, s_before in zip(seen["state"], before):
        assert torch.equal(s_in[0], z0) and torch.equal(s_in[2], z0)
        assert torch.equal(s_in[1], s_before[1]) and torch.equal(s_in[3], s_before[3])
    assert carry.steps.tolist() == [1, 2, 1, 2]


def test_exploration_sets_a_minimum_of_two_segments():
    torch.manual_seed(0)
    model = HRM(CFG)
    torch.nn.init.constant_(model.q_head.bias, 5.0)
    carry = new_carry(model, 64, "cpu")
    carry, _, _ = act_step(model, carry, lambda k: puzzles(k), max_segments=4, explore=1.0,
                           generator=torch.Generator().manual_seed(0))
    assert not carry.halted.any()  # everyone must run at least 2 segments
    model.eval()  # no early halting at evaluation: only max_segments
    carry, _, _ = act_step(model, new_carry(model, 4, "cpu"), lambda k: puzzles(k), max_segments=4, explore=0.0)
    assert not carry.halted.any()


def test_solve_all_returns_one_prediction_per_segment():
    model = build("looped-transformer", CFG).eval()
    preds, qs = solve_all(model, puzzles(6)[0], segments=3)
    assert len(preds) == 3 and preds[0].shape == (6, 36) and qs[0].shape == (6,)
