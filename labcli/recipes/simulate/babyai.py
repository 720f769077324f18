"""`lab simulate babyai`: agents over a knowledge graph on BabyAI missions of three lengths.

Agents (one table, agent x level): random; lab's PPO and DQN on the flat view + mission; PPO and DQN
with the graph encoder (relational attention over the knowledge graph the agent builds); the
symbolic planner over the true grid ("oracle") and over the agent's own graph ("extracted"); the
subgoal executor (PPO, reward shaped by the potential of subgoals done) driven by the planner's
subgoals, and the LM + RL agent: the same executor driven by the LM planner, which proposes each
subgoal with a chain of thought from the mission and the graph.

Missions are drawn by seed: reported missions (`split=test`) seeds 200000+, LM-trace seeds
1000000+; the validation missions (`split=validation`, seeds 100000+), where the agents were
developed and the defaults chosen, are used by neither. Walkthrough = the BabyAI bot's steps on
the same mission. Every learning agent trains `frames` env frames per level; the executor, whose
skills (go to, pick up, go beside, drop) serve every level, trains on the levels mixed, for
`frames` x levels frames. Every agent runs `repeats` times (learners and the executor: one
training seed each; random: one rng seed each) on the same missions; a row is the mean over
repeats with the standard deviation across them. The LM planner is trained once.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.errors import UserError
from labcli.rl.agents.lm_planner import LMConfig
from labcli.rl.dqn import DQNArgs
from labcli.rl.ppo import PPOArgs

Agent = Literal["random", "ppo-flat", "dqn-flat", "ppo-graph", "dqn-graph", "planner-oracle", "planner-extracted",
                "subgoals+rl", "lm+rl"]
Level = Literal["easy", "medium", "hard"]
AGENTS: list[str] = list(Agent.__args__)
SPLIT_SEED = {"validation": 100_000, "test": 200_000}
TRACE_SEED = 1_000_000


class Shaping(Section):
    """The executor's reward shaping (labcli/rl/shaping.py): F = γΦ(x') − Φ(x), Φ(end) = 0."""

    scale: float = Field(0.1, ge=0, description="Φ = scale x (subgoals done [+ progress]); 0: no shaping")
    progress: bool = Field(False, description="Φ also counts progress towards the current subgoal (1 - moves left / 16)")


class Config(RecipeConfig):
    levels: list[Level] = Field(["easy", "medium", "hard"], description="mission lengths: easy (GoToLocal), medium (PutNextLocal), hard (one-room BossLevel sequences)")
    agents: list[Agent] = Field(AGENTS, description="rows of the table")
    frames: int = Field(16384, ge=1, description="env frames per learning agent per level (PPO rounds up to whole rollouts)")
    episodes: int = Field(30, ge=1, description="evaluation missions per level")
    split: Literal["test", "validation"] = Field("test", description="which missions: test (seeds 200000+, reported) or validation (seeds 100000+, for choosing settings)")
    repeats: int = Field(2, ge=1, description="runs of every agent (training seeds seed, seed+1, ...; rng seeds of random)")
    lm_missions: int = Field(60, ge=1, description="missions per level the LM planner's traces come from (seeds 1000000+)")
    kg_missions: int = Field(10, ge=1, description="evaluation missions per level whose extracted graph is scored against the grid")
    shaping: Shaping = Field(default_factory=Shaping)
    ppo: PPOArgs = Field(default_factory=PPOArgs)
    dqn: DQNArgs = Field(default_factory=DQNArgs)
    lm: LMConfig = Field(default_factory=LMConfig)


def check(cfg: Config) -> list[str]:
    problems = []
    if not cfg.levels or not cfg.agents:
        problems.append("nothing to run (hint: give at least one level and one agent)")
    if cfg.ppo.minibatch_size > cfg.ppo.num_envs * cfg.ppo.num_steps:
        problems.append(f"ppo.minibatch_size {cfg.ppo.minibatch_size} exceeds the rollout (hint: lower ppo.minibatch_size)")
    return problems


def plan(cfg: Config) -> str:
    learners = [a for a in cfg.agents if a.startswith(("ppo", "dqn"))]
    subgoal = any(a in cfg.agents for a in ("subgoals+rl", "lm+rl"))
    return (f"{len(cfg.agents)} agents x {len(cfg.levels)} levels x {cfg.repeats} repeats, {cfg.episodes} {cfg.split} missions each; "
            f"{len(learners)} learners x {cfg.frames:,} frames per level and repeat"
            + (f"; the executor {cfg.frames * len(cfg.levels):,} frames on the levels mixed" if subgoal else "")
            + ("; the LM planner trained on traces of " f"{cfg.lm_missions} missions per level" if "lm+rl" in cfg.agents and cfg.lm.model == "trained" else ""))


def run(cfg: Config, ctx) -> None:
    import numpy as np
    import torch

    from labcli import runs
    from labcli.eval.tables import print_table
    from labcli.rl import dqn, ppo
    from labcli.rl.agents import babyai_agents as ba
    from labcli.rl.agents import lm_planner, tables
    from labcli.rl.envs import babyai
    from labcli.runs import seed_everything

    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    lm_planner.check_endpoint(cfg.lm, cfg.agents)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    # A level's missions depend on its name, not on its place in `levels`: levels=[hard] plays the default's hard missions.
    number = {level: list(babyai.LEVELS).index(level) for level in cfg.levels}
    seeds = {level: [SPLIT_SEED[cfg.split] + 1000 * number[level] + k for k in range(cfg.episodes)] for level in cfg.levels}
    walk = {level: [babyai.walkthrough(level, s) for s in seeds[level]] for level in cfg.levels}
    rows, kg_rows, training = [], [], {}

    def add(agent: str, level: str, repeats: list, trainings=None):
        results = [[{"success": e.success, "steps": e.steps, "walkthrough": w} for e, w in zip(episodes, walk[level])]
                   for episodes in repeats]
        tables.add_row(rows, agent, level, results, trainings)

    def learned(run_dir) -> dict:
        wins = [r["episode_return"] > 0 for r in run_dir.metrics() if "episode_return" in r]
        return {"episodes": len(wins), "learned": tables.episodes_to_learn(wins)}

    # --- symbolic planners and random ---------------------------------------------------
    t0 = time.perf_counter()
    for level in cfg.levels:
        for agent in [a for a in ("random", "planner-oracle", "planner-extracted") if a in cfg.agents]:
            repeats, scores = [], []
            for r in range(cfg.repeats if agent == "random" else 1):  # the planners use no randomness
                episodes = []
                for k, seed in enumerate(seeds[level]):
                    result, score = ba.play_symbolic(agent, level, seed, cfg.seed + r + 1000 * k, score=r == 0 and k < cfg.kg_missions)
                    episodes.append(result)
                    scores += score
                repeats.append(episodes)
            add(agent, level, repeats)
            if agent == "planner-extracted" and scores:
                kg_rows.append({"level": level, **kg_row(scores)})
    timings["planners_and_random_s"] = time.perf_counter() - t0

    # --- flat and graph learners ----------------------------------------------------------
    for agent in [a for a in cfg.agents if a.startswith(("ppo", "dqn"))]:
        algo, view = agent.split("-")
        for level in cfg.levels:
            t0 = time.perf_counter()
            repeats, trainings = [], []
            for r in range(cfg.repeats):
                seed = cfg.seed + r
                seed_everything(seed)
                sub = ctx.sub(f"{agent}-{level}-r{r}")
                make_envs = ba.vector_envs(level, view)
                if algo == "ppo":
                    net = ppo.train(f"{agent} {level} r{r}", cfg.frames, seed, cfg.ppo, ppo.Agent(7, encoder=ba.ENCODERS[view]()),
                                    run=sub, progress=True, make_envs=make_envs)
                    act = net.sample
                else:
                    net = dqn.train(f"{agent} {level} r{r}", cfg.frames, seed, cfg.dqn, dqn.QNetwork(7, encoder=ba.ENCODERS[view]()),
                                    run=sub, progress=True, make_envs=make_envs)
                    act = net.greedy
                net.eval()
                seed_everything(seed)
                repeats.append(ba.evaluate(level, view, act, seeds[level]))
                trainings.append(learned(sub))
            add(agent, level, repeats, trainings)
            timings[f"{agent}_{level}_s"] = time.perf_counter() - t0

    # --- the subgoal executor, with the planner's and with the LM's subgoals ------------------------
    if any(a in cfg.agents for a in ("subgoals+rl", "lm+rl")):
        t0 = time.perf_counter()
        executors, executor_trainings = [], []
        for r in range(cfg.repeats):
            seed_everything(cfg.seed + r)
            sub = ctx.sub(f"executor-r{r}")
            executor = ppo.train(f"executor r{r}", cfg.frames * len(cfg.levels), cfg.seed + r, cfg.ppo,
                                 ppo.Agent(7, encoder=ba.SubgoalEncoder()), run=sub, progress=True,
                                 make_envs=ba.vector_envs(list(cfg.levels), "subgoal", cfg.shaping.scale, cfg.ppo.gamma,
                                                          cfg.shaping.progress))
            executors.append(executor.eval())
            executor_trainings.append(learned(sub))
        timings["executor_s"] = time.perf_counter() - t0

        def executor_runs(level: str, lm=None) -> list:
            out = []
            for r, executor in enumerate(executors):
                seed_everything(cfg.seed + r)
                out.append(ba.evaluate(level, "subgoal", executor.sample, seeds[level], lm=lm))
            return out

        if "subgoals+rl" in cfg.agents:
            for level in cfg.levels:
                add("subgoals+rl", level, executor_runs(level), executor_trainings)
        lm_info = {}
        if "lm+rl" in cfg.agents:
            t0 = time.perf_counter()
            examples = []
            if cfg.lm.model == "trained":
                for level in cfg.levels:
                    examples += ba.traces(level, [TRACE_SEED + 1000 * number[level] + k for k in range(cfg.lm_missions)], cfg.lm.trace_noise, cfg.seed)
            held_out = examples[::10]
            train_examples = [e for k, e in enumerate(examples) if k % 10]
            lm, lm_info = lm_planner.load(cfg.lm, train_examples, ctx.sub("planner-lm"), cfg.seed)
            if held_out:
                lm_info["held_out"] = lm_planner.accuracy(lm, held_out[:200])
            timings["lm_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for level in cfg.levels:
                add("lm+rl", level, executor_runs(level, lm), executor_trainings)
            lm_info["proposals"] = lm.calls
            timings["lm_rl_eval_s"] = time.perf_counter() - t0
            runs.write_text(ctx.path("lm_samples.txt"), "\n\n".join(p.prompt + p.text for p in list(lm.cache.values())[:20]))
        training["lm"] = lm_info

    timings["total_s"] = time.perf_counter() - started
    order = {a: i for i, a in enumerate(AGENTS)}
    rows.sort(key=lambda r: (cfg.levels.index(r["level"]), order[r["agent"]]))
    summary = {"levels": {lvl: {"env": babyai.LEVELS[lvl].env_id, "kwargs": babyai.LEVELS[lvl].kwargs,
                                "walkthrough_mean": float(np.mean(walk[lvl]))} for lvl in cfg.levels},
               "frames": cfg.frames, "episodes": cfg.episodes, "split": cfg.split, "repeats": cfg.repeats, "seed": cfg.seed, "shaping": cfg.shaping.model_dump(),
               "rows": rows, "kg": kg_rows, "lm": training.get("lm", {}),
               "timings_s": {k: round(v, 1) for k, v in timings.items()}, "threads": torch.get_num_threads()}
    tables.plot(rows, ctx.path("success_vs_walkthrough.png"), "BabyAI: success against mission length")
    ctx.write_summary(summary)
    ctx.write_report(report(summary))
    print_table(tables.display(rows), tables.LABELS, title=f"lab simulate babyai ({cfg.split} missions)")
    lm_line = summary["lm"].get("held_out", {})
    print(f"babyai: {len(rows)} rows in {timings['total_s']:.0f} s"
          + (f"; LM planner held-out subgoal match {lm_line['subgoal_match']:.2f}" if lm_line else ""))


def kg_row(scores: list[tuple[dict, dict]]) -> dict:
    from labcli.rl.kg import pooled

    everything, seen = pooled([a for a, _ in scores]), pooled([s for _, s in scores])
    return {"precision": round(everything["precision"], 3), "recall_all": round(everything["recall"], 3),
            "recall_seen": round(seen["recall"], 3), "turns": everything["comparisons"]}


def report(summary: dict) -> str:
    from labcli.eval.tables import markdown_table
    from labcli.rl.agents import tables

    lines = ["# simulate babyai", "", "Levels: " + "; ".join(f"{k}: {v['env']} (walkthrough {v['walkthrough_mean']:.1f} steps)"
                                                       for k, v in summary["levels"].items()), ""]
    lines.append(markdown_table(tables.display(summary["rows"]), tables.LABELS))
    if summary["kg"]:
        lines += ["", "Extracted graph against the true grid (pooled over turns):", "", markdown_table(summary["kg"])]
    if summary["lm"]:
        lines += ["", f"LM planner: `{summary['lm']}`"]
    lines += ["", "![success against walkthrough length](success_vs_walkthrough.png)", "",
              f"Timings (s): `{summary['timings_s']}`"]
    return "\n".join(lines) + "\n"
