"""Torque control of the Panda and UR5e: holding, step response, e-stop, IK, task grammar, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from labcli.errors import UserError
from labcli.sims.control import solve_ik
from labcli.sims.robots import load_arm
from labcli.sims.safety import SafetyMonitor
from labcli.sims.sim import Reference, ee_at, make_controller, plan_segments, simulate
from labcli.sims.tasks import parse_task

DT = 0.001


def hold(robot: str, feedforward: bool, kind: str = "pid", ki_scale: float = 1.0, seconds: float = 2.0):
    """Start 0.02 rad away from home on every joint and hold home under gravity."""
    arm = load_arm(robot, DT)
    spec = arm.spec
    start = arm.home + 0.02
    arm.reset(start)
    reference = Reference(start, [], "step")
    reference.final = arm.home.copy()  # no segments: hold the home pose from t=0
    ctrl = make_controller(arm, kind, DT, spec.kp, [k * ki_scale for k in spec.ki], spec.kd, 50.0, feedforward)
    return arm, simulate(arm, reference, ctrl, SafetyMonitor(arm), DT, seconds)


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_models_are_torque_controlled_without_gravcomp(robot):
    arm = load_arm(robot, DT)
    assert arm.model.nu == arm.nq
    assert np.allclose(arm.model.actuator_ctrlrange[:, 1], arm.tau_max)
    assert np.all(arm.model.actuator_gainprm[:, 0] == 1.0) and np.all(arm.model.actuator_biastype == 0)  # motor
    assert arm.model.body_gravcomp.sum() == 0.0
    expected = [87, 87, 87, 87, 12, 12, 12] if robot == "franka" else [150, 150, 150, 28, 28, 28]
    assert arm.tau_max.tolist() == expected


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_pid_with_gravity_feedforward_holds_pose_within_1e_3(robot):
    arm, result = hold(robot, feedforward=True)
    assert result.estop_reason is None
    assert np.abs(result.error[-1]).max() < 1e-3
    assert np.all(np.abs(result.tau) <= arm.tau_max + 1e-9)


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_without_feedforward_or_integral_gravity_pulls_the_arm_off(robot):
    _, result = hold(robot, feedforward=False, ki_scale=0.0)
    assert np.abs(result.error[-1]).max() > 1e-3


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_computed_torque_holds_pose(robot):
    _, result = hold(robot, feedforward=True, kind="computed_torque")
    assert result.estop_reason is None
    assert np.abs(result.error[-1]).max() < 1e-3


@pytest.mark.parametrize("robot,task", [("franka", "joint 1 0.8"), ("ur5", "joint 1 -1.0")])
def test_step_response_stays_within_torque_limits(robot, task):
    arm = load_arm(robot, DT)
    segments = plan_segments(arm, parse_task(task, arm.nq), arm.home, 0.5)
    reference = Reference(arm.home, segments, "step")
    safety = SafetyMonitor(arm, velocity_margin=10.0)  # a raw step is fast by design; check torques only
    ctrl = make_controller(arm, "pid", DT, arm.spec.kp, arm.spec.ki, arm.spec.kd, 50.0, True)
    result = simulate(arm, reference, ctrl, safety, DT, 1.5)
    assert result.estop_reason is None
    assert np.all(np.abs(result.tau) <= arm.tau_max + 1e-9)
    assert np.all(np.abs(arm.data.actuator_force) <= arm.tau_max + 1e-9)
    assert result.saturated.any(), "a raw step should hit the torque limit"
    assert any(e["kind"] == "torque_saturation" for e in result.events)


def test_target_beyond_joint_limit_trips_estop_with_reason():
    arm = load_arm("franka", DT)
    segments = plan_segments(arm, parse_task("joint 4 0.5", arm.nq), arm.home, 0.5)  # range is [-3.07, -0.07]
    reference = Reference(arm.home, segments)
    ctrl = make_controller(arm, "pid", DT, arm.spec.kp, arm.spec.ki, arm.spec.kd, 50.0, True)
    result = simulate(arm, reference, ctrl, SafetyMonitor(arm), DT, reference.end + 1.0, brake_time=0.3)
    assert result.estop_reason.startswith("joint_position: panda_joint4")
    assert [e["kind"] for e in result.events if e["estop"]] == ["joint_position"]
    assert result.t[-1] <= result.estop_time + 0.3 + DT  # braked, then stopped
    assert np.abs(result.qd[-1]).max() < np.abs(result.qd).max()  # the brake slowed the arm


def test_workspace_box_trips_estop():
    arm = load_arm("ur5", DT)
    q0 = arm.home
    safety = SafetyMonitor(arm, workspace_max=np.array([1.0, 1.0, 0.3]))  # home end effector is at z=0.49
    ctrl = make_controller(arm, "pid", DT, arm.spec.kp, arm.spec.ki, arm.spec.kd, 50.0, True)
    result = simulate(arm, Reference(q0, []), ctrl, safety, DT, 0.1, brake_time=0.01)
    assert result.estop_reason.startswith("workspace:")


@pytest.mark.parametrize("robot", ["franka", "ur5"])
def test_dls_ik_reaches_target(robot):
    arm = load_arm(robot, DT)
    target = np.array([0.4, 0.2, 0.45])
    ik = solve_ik(arm, target, arm.home)
    assert ik.converged
    assert np.linalg.norm(ee_at(arm, ik.q) - target) < 1e-3
    assert np.all(ik.q >= arm.q_min) and np.all(ik.q <= arm.q_max)


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


def test_cli_franka_smoke(run_lab, tmp_path):
    proc = run_lab("simulate", "franka", "--pid", "steps=100", "--output", str(tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("config.yaml", "summary.json", "report.md", "steps.csv", "tracking.png", "torques.png", "errors.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 100 and summary["robot"] == "franka" and summary["controller"] == "pid"
    header = (run / "steps.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["t", "q_1"] and "tau_7" in header and "error_7" in header
    assert len((run / "steps.csv").read_text().splitlines()) == 101
    assert "RMS error" in proc.stdout


def test_cli_ur5_estop_tune_and_video(run_lab, tmp_path):
    run = tmp_path / "run"
    run_lab("simulate", "ur5", "--pid", "--task", "joint 1 0", "--interpolation", "step", "--tune", "tuning.kp_scales=[1]", "tuning.kd_scales=[1]",
            "tuning.ki_scales=[1]", "tuning.task=hold 0.1", "--video", "render.fps=5", "render.width=64", "render.height=48",
            "--output", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estop"] and summary["estop_reason"].startswith("joint_velocity: shoulder_pan_joint")
    assert summary["tuning"][0]["best"] is True
    assert (run / "video.gif").stat().st_size > 0 and summary["video"]["frames"] > 1
    assert "Safety events" in (run / "report.md").read_text()


def test_unreachable_target_is_a_user_error():
    arm = load_arm("ur5", DT)
    with pytest.raises(UserError, match="out of reach"):
        plan_segments(arm, parse_task("reach 3 0 0", arm.nq), arm.home, 0.5)


@pytest.mark.parametrize("args,needle", [
    (("--task", "home, then dance"), "unknown task phrase 'dance'"),
    (("gains.kp=[1,2]",), "gains.kp has 2 values"),
])
def test_cli_errors_are_one_line(run_lab, args, needle):
    proc = run_lab("simulate", "franka", *args, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error:") and needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_llm_path_runs_a_local_model_and_its_answer_goes_through_the_grammar(tmp_path):
    """A tiny random GPT-2 built from a config (nothing downloaded) drives the real --llm code path."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from labcli.sims.tasks import text_to_task

    words = ["<unk>", "<eos>", "home", "then", "wave", "reach", ",", "0.5", "0.1", "0.4", "task", ":"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=256, n_embd=16, n_layer=1, n_head=2,
                                       eos_token_id=1, bos_token_id=1, pad_token_id=1))
    tokenizer.save_pretrained(tmp_path / "llm")
    model.save_pretrained(tmp_path / "llm")
    answer = text_to_task("go home and wave", str(tmp_path / "llm"))
    assert isinstance(answer, str)
    with pytest.raises(UserError, match="no such model folder"):
        text_to_task("go home", str(tmp_path / "missing"))


def test_quintic_is_minimum_jerk_with_rest_to_rest_ends():
    from labcli.sims.control import quintic

    q0, q1 = np.array([0.0, 1.0]), np.array([1.0, -1.0])
    q, qd, qdd = quintic(q0, q1, 2.0, np.array([0.0, 1.0, 2.0]))
    assert np.allclose(q[0], q0) and np.allclose(q[2], q1) and np.allclose(q[1], (q0 + q1) / 2)
    assert np.allclose(qd[[0, 2]], 0) and np.allclose(qdd[[0, 2]], 0)
    assert np.allclose(qd[1], 1.875 * (q1 - q0) / 2.0)  # peak velocity of a minimum-jerk move
