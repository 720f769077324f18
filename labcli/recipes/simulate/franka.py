"""`lab simulate franka|ur5 --pid`: torque control of a real arm model in MuJoCo, with safety checks.

A task (`home, then reach 0.5 0.1 0.4, then wave`) becomes joint waypoints (DLS IK for Cartesian
targets), joined by minimum-jerk trajectories and tracked at the control rate by a joint PID
(anti-windup, gravity/Coriolis feed-forward) or computed-torque control. Every step is logged;
the run folder gets steps.csv, summary.json, report.md, plots and, with --video, a GIF/MP4.

`--scene N` puts the arm at a seeded table with named objects and an obstacle (labcli/sims/scene.py);
the task may then say 'move above the red cube, avoiding the wall': the grounded parser (or, with
--lm, a language model whose JSON answer is validated against the scene) turns it into a goal, and
the expert planner reaches it around the obstacle. Contacts with the scene trip the e-stop.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.errors import UserError


class Gains(Section):
    kp: list[float] | None = Field(None, description="PID proportional gains per joint, N·m/rad (default: the arm's)")
    ki: list[float] | None = Field(None, description="PID integral gains per joint, N·m/(rad·s) (default: the arm's)")
    kd: list[float] | None = Field(None, description="PID derivative gains per joint, N·m·s/rad (default: the arm's)")
    wn: float = Field(50.0, description="computed-torque natural frequency, rad/s (Kp=3wn², Kd=3wn, Ki=wn³)")


class Safety(Section):
    position_margin: float = Field(0.02, description="e-stop this many rad inside each joint's range")
    velocity_margin: float = Field(0.95, description="e-stop above this share of each joint's velocity limit")
    workspace_min: list[float] | None = Field(None, description="end-effector box lower corner x y z, m (default: the arm's)")
    workspace_max: list[float] | None = Field(None, description="end-effector box upper corner x y z, m (default: the arm's)")
    collisions: bool = Field(True, description="e-stop on any contact (self or floor)")
    brake_time: float = Field(0.5, description="seconds of braking simulated after an e-stop")


class Tune(Section):
    kp_scales: list[float] = Field([0.5, 1.0, 2.0], description="--tune: multiples of the default Kp to try")
    kd_scales: list[float] = Field([0.5, 1.0, 2.0], description="--tune: multiples of the default Kd to try")
    ki_scales: list[float] = Field([0.0, 1.0], description="--tune: multiples of the default Ki to try")
    task: str | None = Field(None, description="--tune: the task every candidate is scored on by RMS tracking error (default: --task)")


class Video(Section):
    format: Literal["gif", "mp4"] = Field("gif", description="gif (Pillow) or mp4 (needs imageio-ffmpeg)")
    fps: int = Field(20, description="frames per second of simulated time")
    width: int = Field(320, description="pixels")
    height: int = Field(240, description="pixels")


class Config(RecipeConfig):
    robot: Literal["franka", "ur5"] = Field("franka", description="franka (Panda, 7 joints) or ur5 (UR5e, 6 joints)")
    pid: bool = Field(True, description="joint-space PID torque control (the default controller)")
    computed_torque: bool = Field(False, description="use computed-torque control M(q)(q̈_ref+PID)+bias instead of PID")
    feedforward: bool = Field(True, description="add gravity/Coriolis feed-forward (MuJoCo qfrc_bias) to the PID")
    task: str = Field("home, then reach 0.5 0.1 0.4, then wave, then home", description="what to do, in the task language (`home, reach X Y Z, move Q.., joint N A, wave [N], hold S`, joined by `then`)")
    llm: str | None = Field(None, description="a local causal-LM folder that turns a free-text --task into the task language")
    scene: int | None = Field(None, ge=0, description="seed of a tabletop scene (table, objects, obstacle); the task may then name its objects, e.g. 'move above the red cube, avoiding the wall'")
    lm: str | None = Field(None, description="with --scene: a causal LM (folder or cached hub id) or an OpenAI-compatible endpoint (http://host:port/v1) proposes each goal as JSON, validated against the scene")
    lm_model: str = Field("default", description="the model name sent to an --lm endpoint")
    start: list[float] | None = Field(None, description="initial joint angles, rad (default: home)")
    rate: float = Field(1000.0, description="control rate, Hz (also the physics rate)")
    speed: float = Field(0.5, description="peak trajectory speed as a share of each joint's velocity limit")
    interpolation: Literal["quintic", "step"] = Field("quintic", description="quintic (minimum jerk) or step (jump to each goal)")
    settle: float = Field(1.0, description="seconds to keep holding the last goal after the plan ends")
    steps: int = Field(0, description="stop after this many control steps (0: run the whole plan)")
    log_every: int = Field(1, description="write every Nth control step to steps.csv")
    video: bool = Field(False, description="render the run headless (EGL) to video.gif / video.mp4")
    tune: bool = Field(False, description="grid-search PID gains on tune.task, print the table, use the best")
    gains: Gains = Field(default_factory=Gains)
    safety: Safety = Field(default_factory=Safety)
    tuning: Tune = Field(default_factory=Tune)
    render: Video = Field(default_factory=Video, description="--video settings")


def run(cfg: Config, ctx) -> None:
    from labcli.sims import report
    from labcli.sims.robots import load_arm
    from labcli.sims.sim import (
        Reference,
        make_controller,
        metrics,
        plan_segments,
        simulate,
    )
    from labcli.sims.tasks import parse_task, text_to_task

    check_config(cfg)
    dt = 1.0 / cfg.rate
    scene, planner = None, None
    if cfg.scene is not None:
        from labcli.sims.demos import generate_task
        from labcli.sims.planner import Planner
        from labcli.sims.scene import load_scene_arm

        sarm = load_scene_arm(cfg.robot, dt)
        scene = generate_task(cfg.robot, cfg.scene).scene
        sarm.apply(scene)
        arm, planner = sarm.arm, Planner(sarm, dt=0.1)
        print(f"scene {cfg.scene}: {scene.describe()}")
    else:
        arm = load_arm(cfg.robot, dt)
    if cfg.start is not None and len(cfg.start) != arm.nq:
        raise UserError(f"--start has {len(cfg.start)} angles, the {cfg.robot} has {arm.nq} joints", f"give {arm.nq} numbers in rad, e.g. start=[{', '.join(f'{v:g}' for v in arm.home)}]")
    if cfg.start:
        q_start = np.array(cfg.start, dtype=float)
    elif scene is not None:
        q_start = planner.start_configuration(np.array(scene.start))  # above the table, where the scene's tasks start
    else:
        q_start = arm.home.copy()
    kp, ki, kd = gains_for(cfg, arm, planner.sarm.layout.kd if planner else None)
    task = cfg.task
    if cfg.llm:
        task = text_to_task(cfg.task, cfg.llm)
        print(f"llm: '{cfg.task}' -> '{task}'")
        try:
            steps = parse_task(task, arm.nq, scene)
        except UserError as exc:
            raise UserError(f"--llm {cfg.llm} turned the request into '{task}', which is not a valid task ({exc.what})", exc.hint) from None
    else:
        steps = parse_task(task, arm.nq, scene, lm_grounder(cfg) if scene is not None else None)
    for step in steps:
        if step.kind == "goal":
            print(f"grounded: '{step.text}' -> goal {np.round(step.args, 3).tolist()} m")
    controller_kind = "computed_torque" if cfg.computed_torque else "pid"

    tuning_rows = None
    if cfg.tune:
        if controller_kind != "pid":
            raise UserError("--tune searches PID gains", "drop --computed-torque, or tune gains.wn by hand")
        tuning_rows, (kp, ki, kd) = tune_gains(cfg, arm, kp, ki, kd)
        report.print_tuning(tuning_rows)

    arm.reset(q_start)
    segments = plan_segments(arm, steps, q_start, cfg.speed, planner)
    reference = Reference(q_start, segments, cfg.interpolation)
    controller = make_controller(arm, controller_kind, dt, kp, ki, kd, cfg.gains.wn, cfg.feedforward)
    safety = make_safety(cfg, arm)
    arm.reset(q_start)

    recorder = report.VideoRecorder(arm, cfg.render, ctx.path(f"video.{cfg.render.format}")) if cfg.video else None
    frame_every = max(1, int(round(cfg.rate / cfg.render.fps))) if recorder else 0
    duration = reference.end + cfg.settle
    with report.progress_bar(f"{cfg.robot} {controller_kind}", int(duration / dt)) as advance:
        result = simulate(arm, reference, controller, safety, dt, duration, max_steps=cfg.steps,
                          brake_time=cfg.safety.brake_time, on_frame=recorder.capture if recorder else None,
                          frame_every=frame_every, progress=advance)
    summary = metrics(result, reference, arm.joint_names, arm.tau_max, dt)
    summary.update({
        "robot": cfg.robot, "controller": controller_kind, "feedforward": cfg.feedforward, "rate_hz": cfg.rate,
        "task": task, "scene": scene.describe() if scene is not None else None, "plan": [{"phrase": s.label, "goal": np.round(s.q_goal, 4).tolist(), "duration_s": round(s.duration, 3)} for s in segments],
        "gains": {"kp": list(kp), "ki": list(ki), "kd": list(kd)} if controller_kind == "pid" else {"wn": cfg.gains.wn},
        "estop": result.estop_reason is not None, "estop_reason": result.estop_reason, "estop_time_s": result.estop_time,
        "safety_events": result.events, "steps": len(result.t),
    })
    if tuning_rows is not None:
        summary["tuning"] = tuning_rows
    for event in result.events:
        ctx.log(event="safety", **event)
    for i, seg in enumerate(segments):
        rows = result.segment == i
        if rows.any():
            ctx.log(event="segment", index=i, phrase=seg.label, rms_error_rad=float(np.sqrt(np.mean(result.error[rows] ** 2))))
    report.write_steps_csv(ctx.path("steps.csv"), result, arm.joint_names, cfg.log_every)
    plots = report.plot_run(ctx.dir, result, arm)
    if recorder:
        summary["video"] = recorder.save()
    ctx.write_summary(summary)
    ctx.write_report(report.arm_report(summary, plots, arm.joint_names))
    report.print_summary(summary)


def check(cfg: Config) -> None:
    """For `lab check`: the settings, and the task (unless --llm / --lm write it at run time); raises UserError."""
    from labcli.sims.tasks import parse_task

    check_config(cfg)
    if not cfg.llm and not cfg.lm:
        scene = None
        if cfg.scene is not None:
            from labcli.sims.demos import generate_task

            scene = generate_task(cfg.robot, cfg.scene).scene
        parse_task(cfg.task, 7 if cfg.robot == "franka" else 6, scene)


def plan(cfg: Config) -> str:
    """For `lab check`: what the run will do."""
    controller = "computed-torque control" if cfg.computed_torque else "PID" + (" with feed-forward" if cfg.feedforward else "")
    task = f"a task written by {cfg.llm} from '{cfg.task}'" if cfg.llm else f"'{cfg.task}'"
    if cfg.scene is not None:
        task += f" in scene {cfg.scene}" + (f", goals proposed by {cfg.lm}" if cfg.lm else "")
    extras = [x for x, on in (("a gain search first", cfg.tune), (f"a {cfg.render.format} video", cfg.video)) if on]
    return f"{cfg.robot}, {controller} at {cfg.rate:g} Hz: {task}" + (f"; {' and '.join(extras)}" if extras else "")


def check_config(cfg: Config) -> None:
    if not cfg.pid and not cfg.computed_torque:
        raise UserError("no controller: --pid false and no --computed-torque", "pass --pid or --computed-torque")
    if cfg.rate < 100 or cfg.rate > 20000:
        raise UserError(f"--rate {cfg.rate} Hz is outside 100..20000", "use the default 1000 (Franka FCI runs at 1 kHz)")
    if not 0 < cfg.speed <= 1:
        raise UserError(f"--speed {cfg.speed} must be in (0, 1]", "it is a share of the joint velocity limits, e.g. 0.5")
    if cfg.lm and cfg.scene is None:
        raise UserError("--lm grounds instructions in a scene", "add --scene N (a seed), or use --llm to write the task language")
    if cfg.steps < 0 or cfg.log_every < 1:
        raise UserError("steps must be >= 0 and log_every >= 1", "e.g. steps=100 log_every=10")


def lm_grounder(cfg: Config):
    """--lm: each scene phrase goes to the language model; its JSON is validated against the scene."""
    if not cfg.lm:
        return None
    from labcli.sims.grounding import lm_propose

    def grounder(phrase, scene):
        grounding, answer = lm_propose(phrase, scene, cfg.lm, cfg.lm_model)
        print(f"lm: '{phrase}' -> {' '.join(answer.split())[:120]} -> {grounding.describe()}")
        return grounding

    return grounder


def gains_for(cfg: Config, arm, scene_kd=None) -> tuple[list[float], list[float], list[float]]:
    """The configured gains, else the arm's (with a scene: its layout's Kd, see labcli/sims/scene.py)."""
    out = []
    for name in ("kp", "ki", "kd"):
        values = getattr(cfg.gains, name)
        default = scene_kd if name == "kd" and scene_kd is not None else getattr(arm.spec, name)
        values = list(default) if values is None else values
        if len(values) != arm.nq:
            raise UserError(f"gains.{name} has {len(values)} values, the {cfg.robot} has {arm.nq} joints",
                            f"give {arm.nq} numbers, e.g. gains.{name}=[{', '.join(str(v) for v in getattr(arm.spec, name))}]")
        out.append([float(v) for v in values])
    return out[0], out[1], out[2]


def make_safety(cfg: Config, arm):
    from labcli.sims.safety import SafetyMonitor

    for name in ("workspace_min", "workspace_max"):
        value = getattr(cfg.safety, name)
        if value is not None and len(value) != 3:
            raise UserError(f"safety.{name} needs 3 numbers (x y z, m), got {len(value)}", f"e.g. safety.{name}=[-0.8,-0.8,0.05]")
    return SafetyMonitor(arm, cfg.safety.position_margin, cfg.safety.velocity_margin,
                         cfg.safety.workspace_min, cfg.safety.workspace_max, cfg.safety.collisions)


def tune_gains(cfg: Config, arm, kp, ki, kd):
    """Grid search over Kp, Kd, Ki multiples on `tuning.task`; score = RMS error, e-stops disqualify."""
    from labcli.sims.sim import (
        Reference,
        make_controller,
        metrics,
        plan_segments,
        simulate,
    )
    from labcli.sims.tasks import parse_task

    dt = 1.0 / cfg.rate
    steps = parse_task(cfg.tuning.task or cfg.task, arm.nq)
    q0 = arm.home.copy()
    arm.reset(q0)
    reference = Reference(q0, plan_segments(arm, steps, q0, cfg.speed), cfg.interpolation)
    rows, best = [], None
    for sp in cfg.tuning.kp_scales:
        for sd in cfg.tuning.kd_scales:
            for si in cfg.tuning.ki_scales:
                gains = ([g * sp for g in kp], [g * si for g in ki], [g * sd for g in kd])
                arm.reset(q0)
                ctrl = make_controller(arm, "pid", dt, *gains, cfg.gains.wn, cfg.feedforward)
                result = simulate(arm, reference, ctrl, make_safety(cfg, arm), dt, reference.end + 0.5)
                m = metrics(result, reference, arm.joint_names, arm.tau_max, dt)
                ok = result.estop_reason is None and np.isfinite(m["rms_error_rad"])
                rows.append({"kp_scale": sp, "kd_scale": sd, "ki_scale": si, "rms_error_rad": m["rms_error_rad"],
                             "max_error_rad": m["max_error_rad"], "saturated_share": m["saturated_share"],
                             "estop": result.estop_reason})
                if ok and (best is None or m["rms_error_rad"] < best[0]):
                    best = (m["rms_error_rad"], len(rows) - 1, gains)
    if best is None:
        raise UserError("--tune: every gain set tripped the e-stop", "widen tuning.kp_scales / kd_scales or lower --speed")
    rows[best[1]]["best"] = True
    return rows, best[2]
