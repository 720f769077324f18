"""`lab simulate franka-dit|ur5-dit`: a Diffusion Transformer policy vs MLP behaviour cloning vs the expert.

One run does everything on the arm's tabletop scenes (labcli/sims/scene.py): the expert (IK + a
planner that passes obstacles on either side) demonstrates `data.scenes` seeded training tasks,
twice when an obstacle blocks the way (left and right); a DiT policy (adaLN-Zero, cosine schedule,
DDIM, classifier-free guidance) and an MLP with the same inputs learn to map the observation
(joint angles, grounded goal and obstacle, instruction words, overhead image) to a chunk of future
joint positions; then all three run in MuJoCo on held-out scenes and held-out phrasings under the
torque limits and safety checks, executed receding-horizon by the joint PID. The table: success,
collisions, safety stops, the split between the two ways around the obstacle, tracking error,
time; rows for partial observations (camera dropped, joints masked, goal noise) and guidance
scales; per-scene diversity over `eval.diversity_samples` samples. The run folder gets demos.npz,
both policies (dit/, mlp/), summary.json, report.md, trajectories.png, losses.png and videos.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.engine.loop import LoopConfig
from labcli.errors import UserError

TRAIN_SEED = 10_000_000  # training scenes: seed * TRAIN_SEED + i; held-out scenes use the ranges below
SPLIT_SEED = {"val": 1_000_000_000, "test": 2_000_000_000}  # + seed * 100_000 + i: disjoint from training and each other
PARTIAL = Literal["no_camera", "masked_joints", "goal_noise"]


class Data(Section):
    scenes: int = Field(400, ge=2, description="training scenes; a blocked one gives two demonstrations (left and right)")
    blocked_share: float = Field(0.7, ge=0, le=1, description="share of scenes with an obstacle across the straight path")
    image_size: int = Field(48, ge=0, description="overhead camera image side in pixels (0: no image)")
    val_share: float = Field(0.05, ge=0, lt=0.5, description="share of demonstrations kept for the validation loss")
    load: str | None = Field(None, description="reuse demonstrations: a demos.npz or the run folder holding one")


class Policy(Section):
    policy_dt: float = Field(0.2, gt=0, description="seconds between waypoints (expert plans and policy chunks)")
    horizon: int = Field(8, ge=1, description="waypoints per predicted chunk (H)")
    execute: int = Field(4, ge=1, description="waypoints executed before replanning (receding horizon)")
    width: int = Field(96, ge=8, description="DiT width (also the observation embedding's)")
    depth: int = Field(3, ge=1, description="DiT blocks")
    heads: int = Field(4, ge=1, description="attention heads")
    diffusion_steps: int = Field(100, ge=2, description="training noise levels T (cosine schedule)")
    sample_steps: int = Field(10, ge=1, description="DDIM steps when acting")
    prediction: Literal["epsilon", "v_prediction"] = Field("epsilon", description="what the DiT regresses (MSE)")
    p_uncond: float = Field(0.1, ge=0, le=1, description="share of training rows whose task condition is dropped (CFG)")
    guidance: float = Field(1.0, ge=0, description="CFG scale of the main DiT row (0: unconditional, 1: conditional)")
    q_noise: float = Field(0.005, ge=0, description="rad of Gaussian noise on the observed joint angles in training")
    per_demo: int = Field(8, ge=1, description="training rows taken from each demonstration in a batch")
    mlp_hidden: int = Field(512, ge=8, description="MLP-BC hidden width (two hidden layers)")


class PolicyTrain(LoopConfig):
    max_steps: int = Field(800, ge=1, description="optimizer steps")
    batch_size: int = Field(128, ge=1, description="rows per step (batch_size / policy.per_demo demonstrations)")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0, description="linear LR warm-up, in steps")
    eval_every: int = Field(500, ge=0, description="validation loss every N steps (and at the end)")
    log_every: int = Field(50, ge=1, description="log the training loss every N steps")
    tensorboard: bool = Field(False, description="also log to TensorBoard when installed")


class Eval(Section):
    tasks: int = Field(16, ge=1, le=100_000, description="held-out tasks (new scenes, held-out phrasings)")
    split: Literal["val", "test"] = Field("test", description="held-out scenes: val to choose settings on, test to report (disjoint seeds)")
    max_time: float = Field(6.0, gt=0, description="seconds per episode (the expert's paths take up to ~4.2 s plus 1 s of holding)")
    parallel: int = Field(12, ge=1, description="episodes simulated in lockstep (one policy call per replan for all)")
    guidance_scales: list[float] = Field([0.0, 1.0, 3.0], description="CFG scales for the guidance rows")
    partial: list[PARTIAL] = Field(["no_camera", "masked_joints", "goal_noise"], description="partial-observation rows (DiT and MLP)")
    masked_joints: list[int] = Field([2, 4], description="joints (1-based) replaced by their data-set mean for masked_joints")
    goal_noise: float = Field(0.03, ge=0, description="m of Gaussian noise per axis on the goal for goal_noise")
    full_chunk_rows: bool = Field(False, description="also run DiT and MLP-BC executing whole chunks before replanning (execute = horizon)")
    diversity_scenes: int = Field(3, ge=0, description="blocked held-out scenes sampled repeatedly")
    diversity_samples: int = Field(20, ge=2, description="DiT samples per diversity scene")
    video: bool = Field(True, description="video.gif: the DiT and the MLP on the first diversity scene")


class Config(RecipeConfig):
    robot: Literal["franka", "ur5"] = Field("franka", description="franka (Panda, 7 joints) or ur5 (UR5e, 6 joints)")
    data: Data = Field(default_factory=Data)
    policy: Policy = Field(default_factory=Policy)
    train: PolicyTrain = Field(default_factory=PolicyTrain, description="DiT training")
    mlp_train: PolicyTrain = Field(default_factory=PolicyTrain, description="MLP-BC training (same keys)")
    eval: Eval = Field(default_factory=Eval)


def validate(cfg: Config) -> None:
    p = cfg.policy
    if p.execute > p.horizon:
        raise UserError(f"policy.execute {p.execute} > policy.horizon {p.horizon}", "execute at most the predicted chunk")
    if p.width % p.heads:
        raise UserError(f"policy.width {p.width} is not a multiple of policy.heads {p.heads}", "e.g. width=96 heads=4")
    if p.sample_steps > p.diffusion_steps:
        raise UserError(f"policy.sample_steps {p.sample_steps} > policy.diffusion_steps {p.diffusion_steps}", "DDIM takes a subset of the training steps")
    nq = 7 if cfg.robot == "franka" else 6
    bad = [j for j in cfg.eval.masked_joints if not 1 <= j <= nq]
    if bad:
        raise UserError(f"eval.masked_joints {bad}: the {cfg.robot} has joints 1..{nq}", "e.g. eval.masked_joints=[2,4]")
    if cfg.data.load:
        demos_path(cfg.data.load)


def demos_path(value: str) -> Path:
    path = Path(value)
    path = path / "demos.npz" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"data.load {value}: no demos.npz there", "pass a run folder of this recipe or its demos.npz")
    return path


def check(cfg: Config) -> None:
    """What `run` would refuse (`lab check` reports the UserError raised)."""
    validate(cfg)


def plan(cfg: Config) -> str:
    p = cfg.policy
    data = f"demonstrations from {cfg.data.load}" if cfg.data.load else f"expert demonstrations on {cfg.data.scenes} scenes"
    return (f"{cfg.robot}: {data}; DiT (width {p.width}, {p.depth} blocks, H={p.horizon}) {cfg.train.max_steps} steps and "
            f"MLP-BC {cfg.mlp_train.max_steps} steps; evaluation on {cfg.eval.tasks} held-out {cfg.eval.split} tasks in MuJoCo "
            f"(+ {len(cfg.eval.partial)} partial-observation, {len(cfg.eval.guidance_scales)} guidance and diversity rows)")


def run(cfg: Config, ctx) -> None:
    from labcli.engine.distributed import pick_device
    from labcli.sims import report
    from labcli.sims.demos import (
        generate_demos,
        load_demos,
        save_demos,
        tasks_with_plans,
    )
    from labcli.sims.planner import Planner
    from labcli.sims.policy.data import ChunkData
    from labcli.sims.rollout import Execution
    from labcli.sims.scene import load_scene_arm

    validate(cfg)
    device = pick_device(cfg.device)
    p, started = cfg.policy, time.perf_counter()
    timings: dict[str, float] = {}
    sarm = load_scene_arm(cfg.robot)
    planner = Planner(sarm, dt=p.policy_dt)

    t0 = time.perf_counter()
    if cfg.data.load:
        demos = load_demos(demos_path(cfg.data.load))
        if demos["q"].shape[2] != sarm.arm.nq or abs(float(demos["dt"]) - p.policy_dt) > 1e-9:
            raise UserError(f"data.load: those demonstrations are for {demos['q'].shape[2]} joints every {float(demos['dt'])} s",
                            f"use demonstrations of the {cfg.robot} with policy.policy_dt={float(demos['dt'])}")
    else:
        with report.progress_bar("expert demonstrations (scenes)", cfg.data.scenes) as advance:
            demos = generate_demos(sarm, planner, cfg.data.scenes, cfg.seed * TRAIN_SEED, cfg.data.blocked_share,
                                   cfg.data.image_size, advance)
        save_demos(ctx.path("demos.npz"), demos)
    timings["demos_s"] = time.perf_counter() - t0
    n_demos = len(demos["q"])
    print(f"demonstrations: {n_demos} ({(demos['mode'] == 'left').sum()} left, {(demos['mode'] == 'right').sum()} right, "
          f"{(demos['mode'] == 'direct').sum()} direct) in {timings['demos_s']:.0f} s")

    t0 = time.perf_counter()
    with report.progress_bar("held-out tasks", cfg.eval.tasks) as advance:
        tasks, plans, _ = tasks_with_plans(cfg.robot, cfg.eval.tasks, SPLIT_SEED[cfg.eval.split] + cfg.seed * 100_000, cfg.data.blocked_share,
                                           "heldout", planner, advance)
    images = []
    for task, found in zip(tasks, plans):
        sarm.apply(task.scene)
        images.append(sarm.render(found[0].q[0], cfg.data.image_size) if cfg.data.image_size else np.zeros((1, 1, 3), np.uint8))
    timings["eval_tasks_s"] = time.perf_counter() - t0

    n_val = max(1, int(round(cfg.data.val_share * n_demos))) if cfg.data.val_share > 0 else 0
    split = {k: (v[: n_demos - n_val] if getattr(v, "ndim", 0) and len(v) == n_demos else v) for k, v in demos.items()}
    held = {k: (v[n_demos - n_val:] if getattr(v, "ndim", 0) and len(v) == n_demos else v) for k, v in demos.items()}
    train_data = ChunkData(split, p.horizon, p.q_noise, device)
    val_data = ChunkData(held, p.horizon, 0.0, device) if n_val else None

    policies, losses = {}, {}
    for kind, tc in (("dit", cfg.train), ("mlp", cfg.mlp_train)):
        t0 = time.perf_counter()
        policies[kind], losses[kind] = train_policy(kind, cfg, tc, train_data, val_data, sarm.arm.nq, ctx.sub(kind), device)
        timings[f"train_{kind}_s"] = time.perf_counter() - t0

    ex = Execution(policy_dt=p.policy_dt, horizon=p.horizon, execute=p.execute, max_time=cfg.eval.max_time)
    t0 = time.perf_counter()
    results = evaluate_all(cfg, ctx, sarm, tasks, plans, images, policies, ex, device)
    timings["eval_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started

    summary = {
        "robot": cfg.robot, "demos": int(n_demos), "demo_modes": {m: int((demos["mode"] == m).sum()) for m in ("left", "right", "direct")},
        "skipped_seeds": int(demos.get("skipped", 0)), "eval_tasks": len(tasks), "eval_split": cfg.eval.split,
        "eval_blocked": int(sum(t.blocked for t in tasks)), "rows": results["rows"], "diversity": results["diversity"],
        "train": losses, "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "params": {k: sum(x.numel() for x in m.parameters()) for k, m in policies.items()},
        "device": str(device), **results["files"],
    }
    ctx.write_summary(summary)
    ctx.write_report(report_markdown(cfg, summary))
    print_table(summary)


def train_policy(kind: str, cfg: Config, tc: PolicyTrain, data, val_data, nq: int, run, device):
    """Train the DiT or the MLP on the engine's step loop; returns the policy (eval mode) and its losses."""
    import torch

    from labcli.engine.loop import fit
    from labcli.sims.policy.policies import DiffusionPolicy, MLPPolicy

    p = cfg.policy
    if kind == "dit":
        policy = DiffusionPolicy(nq, p.horizon, cfg.data.image_size, p.width, p.depth, p.heads, p.diffusion_steps, p.prediction, p.p_uncond)
    else:
        policy = MLPPolicy(nq, p.horizon, cfg.data.image_size, p.width, p.mlp_hidden)
    policy.norm.fit(data.q[:, : -p.horizon].reshape(-1, nq).cpu().numpy(), data.task.cpu().numpy(), data.all_offsets())
    generator = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + (1 if kind == "dit" else 2))
    val_batch = val_data.sample(512, torch.Generator(device=device).manual_seed(cfg.seed), p.per_demo) if val_data else None

    def step(loop, i):
        obs, offsets = data.sample(tc.batch_size, generator, p.per_demo)
        with loop.autocast():
            loss = loop.model.loss(obs, offsets, generator)
        loss.backward()
        return {"loss": loss.item(), "grad_norm": loop.update()}

    def evaluate(loop, i):
        if val_batch is None:
            return {}
        loop.model.eval()
        with torch.no_grad():  # fixed noise and timesteps, so the curve compares like with like
            loss = loop.model.loss(*val_batch, torch.Generator(device=device).manual_seed(7)).item()
        loop.model.train()
        return {"eval_loss": loss}

    result = fit(policy, step, run, tc, device=device, seed=cfg.seed, evaluate=evaluate, progress=True)
    policy = result.model.eval()
    return policy, {"steps": result.steps, "final_loss": result.metrics.get("loss"), "val_loss": result.eval.get("eval_loss"),
                    "wall_s": round(result.wall_s, 1)}


def evaluate_all(cfg: Config, ctx, sarm, tasks, plans, images, policies: dict, ex, device) -> dict:
    """Every row of the table, the diversity samples, the trajectory plot and the video."""
    from labcli.sims import report
    from labcli.sims.evaluate import Perturbation, diversity, policy_actor, summarise
    from labcli.sims.rollout import expert_actor, run_episodes

    p, e = cfg.policy, cfg.eval
    pool = [sarm.copy() for _ in range(min(e.parallel, len(tasks)))]
    starts = [found[0].q[0] for found in plans]
    # the expert's side on a blocked task: alternating, so its own split is 50/50 by construction
    expert_plans = {id(t): found[i % len(found)].q for i, (t, found) in enumerate(zip(tasks, plans))}
    perturbations = {
        "no_camera": Perturbation("camera dropped", drop_image=True),
        "masked_joints": Perturbation(f"joints {'+'.join(map(str, e.masked_joints))} masked", mask_joints=tuple(j - 1 for j in e.masked_joints)),
        "goal_noise": Perturbation(f"goal noise {e.goal_noise * 100:g} cm", goal_noise=e.goal_noise),
    }
    def actor(kind, guidance=p.guidance, perturbation=Perturbation(), execution=ex):
        return policy_actor(policies[kind], execution, guidance, p.sample_steps, cfg.seed, perturbation, device)

    # (policy, observation, CFG scale, execution, act)
    runs_to_do = [("expert", "full observation", None, ex, expert_actor(expert_plans, ex))]
    runs_to_do += [(kind, "full observation", p.guidance if kind == "dit" else None, ex, actor(kind)) for kind in ("dit", "mlp")]
    for name in e.partial:
        runs_to_do += [(kind, perturbations[name].name, p.guidance if kind == "dit" else None, ex, actor(kind, perturbation=perturbations[name]))
                       for kind in ("dit", "mlp")]
    runs_to_do += [("dit", "full observation", w, ex, actor("dit", w)) for w in e.guidance_scales if w != p.guidance]
    if e.full_chunk_rows and ex.execute < ex.horizon:
        whole = replace(ex, execute=ex.horizon)
        runs_to_do += [(kind, "full observation", p.guidance if kind == "dit" else None, whole, actor(kind, execution=whole)) for kind in ("dit", "mlp")]
    rows, episodes = [], {}
    with report.progress_bar("evaluation episodes", len(runs_to_do) * len(tasks)) as advance:
        for k, (kind, observation, guidance, execution, act) in enumerate(runs_to_do):
            results = run_episodes(pool, tasks, starts, images, execution, act, lambda n, k=k: advance(k * len(tasks) + n))
            rows.append({"policy": {"dit": "DiT", "mlp": "MLP-BC", "expert": "expert"}[kind], "observation": observation,
                         "guidance": guidance, "execute": f"{execution.execute}/{execution.horizon}", **summarise(results)})
            episodes.setdefault((kind, observation, guidance), results)

    blocked = [i for i, t in enumerate(tasks) if t.blocked][: e.diversity_scenes]
    div_tasks = [tasks[i] for i in blocked for _ in range(e.diversity_samples)]
    div_results = []
    if blocked:
        with report.progress_bar("diversity samples", len(div_tasks)) as advance:
            div_results = run_episodes(pool, div_tasks, [starts[i] for i in blocked for _ in range(e.diversity_samples)],
                                       [images[i] for i in blocked for _ in range(e.diversity_samples)], ex,
                                       policy_actor(policies["dit"], ex, p.guidance, p.sample_steps, cfg.seed + 1, device=device), advance)
    per_scene = [div_results[j * e.diversity_samples:(j + 1) * e.diversity_samples] for j in range(len(blocked))]
    mlp_main = episodes[("mlp", "full observation", None)]
    div = diversity(per_scene)
    div["mlp_modes"] = [mlp_main[i]["mode"] for i in blocked]
    div["expert_pairwise_distance_rad"] = [round(float(np.linalg.norm(found[0].q[: min(len(found[0].q), len(found[1].q))] - found[1].q[: min(len(found[0].q), len(found[1].q))], axis=1).mean()), 4) for found in (plans[i] for i in blocked)]

    files = {}
    if blocked:
        files["trajectories_plot"] = report.plot_paths(ctx.path("trajectories.png"), [tasks[i] for i in blocked[:4]],
                                                       per_scene[:4], [mlp_main[i] for i in blocked[:4]], [plans[i] for i in blocked[:4]]).name
    files["losses_plot"] = report.plot_losses(ctx.path("losses.png"), {"DiT": ctx.sub("dit").metrics(), "MLP-BC": ctx.sub("mlp").metrics()}).name
    if e.video and blocked:
        files["video"] = report.policy_video(ctx.path("video.gif"), pool[0], tasks[blocked[0]], starts[blocked[0]], images[blocked[0]], ex,
                                             {"DiT": policy_actor(policies["dit"], ex, p.guidance, p.sample_steps, cfg.seed, device=device),
                                              "MLP-BC": policy_actor(policies["mlp"], ex, device=device)}).name
    return {"rows": rows, "diversity": div, "files": files}


ROW_COLUMNS = ["policy", "observation", "guidance", "execute", "success_pct", "collision_pct", "safety_stop_pct", "left_pct", "right_pct",
               "blocked_collision_pct", "tracking_rms_rad", "time_to_goal_s"]
ROW_LABELS = ["policy", "observation", "CFG", "executed/chunk", "success %", "collisions %", "safety stops %", "left %", "right %",
              "collisions % (blocked)", "tracking RMS (rad)", "time to goal (s)"]


def table_rows(summary: dict) -> list[dict]:
    return [{label: fmt(r.get(col)) for col, label in zip(ROW_COLUMNS, ROW_LABELS)} for r in summary["rows"]]


def fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 0.01 and value != 0:
        return f"{value:.1e}"
    return value


def claims(summary: dict) -> list:
    """Issue 17's reading of Diffusion Policy (Chi et al. 2023), checked on the main rows' blocked tasks:
    the DiT commits to one side per episode (collisions <= 5 %, each side 40-60 %), MLP-BC regresses
    to the average of the two sides and collides (>= 50 %)."""
    from labcli.eval.claims import Claim, all_of, verdict

    main = {}
    for r in summary["rows"]:
        main.setdefault(r["policy"], r)  # the first row of each policy is its full-observation row
    dit, mlp = main["DiT"], main["MLP-BC"]
    setting = f"{summary['robot']}, {summary['demos']} demos, {dit['blocked_episodes']} blocked held-out {summary.get('eval_split', 'test')} tasks"
    left, right, coll = dit["left_pct"], dit["right_pct"], dit["blocked_collision_pct"]
    sides = [verdict(v, 40, partly=20) if v is not None and v <= 60 else "does not hold" for v in (left, right)]
    return [
        Claim("a diffusion policy commits to one of two modes, without colliding", "Chi et al. 2023 (issue 17's bounds): collisions <= 5 %, each side 40-60 %",
              setting, f"collisions {coll} %, left {left} %, right {right} %, success {dit['blocked_success_pct']} %", all_of(verdict(coll, 5 + 1e-9, above=False), *sides)),
        Claim("MLP regression averages the two modes and collides", "Chi et al. 2023 (issue 17's bound): collisions >= 50 %",
              setting, f"collisions {mlp['blocked_collision_pct']} %, left {mlp['left_pct']} %, right {mlp['right_pct']} %",
              verdict(mlp["blocked_collision_pct"], 50 - 1e-9)),
    ]


def report_markdown(cfg: Config, summary: dict) -> str:
    from labcli.eval import claims as claim_table
    from labcli.eval.tables import markdown_table

    div = summary["diversity"]
    lines = [f"# simulate {cfg.robot}-dit", "",
             f"{summary['demos']} expert demonstrations ({summary['demo_modes']}), {summary['eval_tasks']} held-out {summary['eval_split']} tasks "
             f"({summary['eval_blocked']} with an obstacle across the straight path). Mode shares (left/right) count those.", "",
             markdown_table(table_rows(summary)), "",
             "## Claims", "", claim_table.markdown(claims(summary)), "",
             f"## Diversity: {cfg.eval.diversity_samples} DiT samples on each of {len(div['scenes'])} blocked scenes", "",
             markdown_table(div["scenes"]) if div["scenes"] else "(no blocked scene)", "",
             f"Scenes where the DiT used both sides: {div['scenes_with_both_modes']}/{len(div['scenes'])}; MLP-BC's side per scene: "
             f"{', '.join(div['mlp_modes'])}; the expert's two plans differ by {div['expert_pairwise_distance_rad']} rad.", "",
             f"Timings (s): {summary['timings_s']}", ""]
    for key in ("trajectories_plot", "losses_plot"):
        if key in summary:
            lines += [f"![{summary[key]}]({summary[key]})", ""]
    if "video" in summary:
        lines.append(f"Video: [{summary['video']}]({summary['video']})")
    return "\n".join(lines) + "\n"


def print_table(summary: dict) -> None:
    from labcli.eval.tables import print_table as show

    from labcli.eval.claims import print_claims

    show(table_rows(summary), title=f"{summary['robot']}: DiT vs MLP-BC vs expert on {summary['eval_tasks']} held-out {summary.get('eval_split', 'test')} tasks")
    print_claims(claims(summary), "mode commitment on blocked tasks (Diffusion Policy)")
    div = summary["diversity"]
    print(f"diversity: DiT used both sides on {div['scenes_with_both_modes']}/{len(div['scenes'])} scenes "
          f"(minority side {div['mean_minority_mode_pct']} % on average, pairwise distance {div['mean_pairwise_distance_rad']} rad); "
          f"total {summary['timings_s']['total_s']:.0f} s")
