"""`lab reproduce hrm`: Wang et al. 2025, "Hierarchical Reasoning Model", on Sudoku generated here.

Puzzles come from labcli.data.sudoku: random full boards, cells blanked while the solver still counts
exactly one solution (6x6 on the CPU default, 9x9 minimal puzzles that need search for the GPU
variant), 1,000 for training (augmented on the fly by validity-preserving symmetries, as the paper
does), a disjoint dev set (training curves and any choice of settings look only at it) and a
disjoint held-out test set (the reported numbers). Three arms with the same parameter count (labcli.models.hrm):

* `hrm`: low- and high-level recurrent modules, one-step gradient, deep supervision, ACT halting;
* `looped-transformer`: one transformer of the same size in the same outer loop (deep supervision,
  carried state, ACT halting): the ARC Prize analysis's control;
* `transformer`: the same transformer, one pass, no outer loop.

Every arm trains on the engine for the same optimizer steps and batch. A training step is one
segment over a batch of slots (the paper's carry): each slot keeps its puzzle and state until it
halts, is supervised at every segment, and then takes a new puzzle. The loss is the per-cell
cross-entropy plus the halting head's binary cross-entropy against "this segment's answer is all
correct" (the Q-learning target of the paper's code without the continue head, as its later
versions). Evaluation runs the full `max_segments` on held-out puzzles: exact-solve accuracy with 95 %
Wilson intervals, accuracy after each segment, and the two effects the ARC Prize analysis
separates, each a paired difference on the same puzzles with a bootstrap interval: the outer loop
(looped transformer minus single pass) and HRM's hierarchy (HRM minus looped transformer).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.engine.loop import LoopConfig
from labcli.runs import Run

PAPER = "Wang et al. 2025"
ARMS = ("hrm", "looped-transformer", "transformer")


class PuzzleSection(Section):
    board: Literal["6x6", "9x9"] = Field("6x6", description="6x6 (2x3 boxes) or 9x9 (3x3 boxes)")
    train: int = Field(1000, ge=1, description="Training puzzles (the paper's 1,000)")
    test: int = Field(500, ge=1, description="Held-out test puzzles (disjoint from training and dev): the reported numbers")
    dev: int = Field(200, ge=1, description="Dev puzzles (disjoint from training and test): curves, choosing settings")
    min_clues: int = Field(16, ge=0, description="Stop blanking at this many clues (0: blank until minimal)")
    min_guesses: int = Field(0, ge=0, description="Keep only puzzles whose solution needs this many solver guesses ('extreme': > 0)")
    augment: bool = Field(True, description="Random validity-preserving symmetry per training puzzle draw")
    workers: int = Field(1, ge=1, description="Processes that generate puzzles")


class ModelSection(Section):
    d_model: int = Field(64, ge=8, description="Width")
    n_heads: int = Field(4, ge=1, description="Attention heads")
    layers: int = Field(2, ge=1, description="Blocks per HRM module (L and H); the transformers get twice as many")
    expansion: float = Field(4.0, gt=0, description="SwiGLU width / d_model (x 2/3)")
    h_cycles: int = Field(2, ge=1, description="HRM: high-level cycles N per segment")
    l_cycles: int = Field(2, ge=1, description="HRM: low-level steps T per high-level cycle")


class HRMTrain(LoopConfig):
    batch_size: int = Field(64, ge=1, description="Slots (puzzles in flight) per step")
    max_segments: int = Field(4, ge=1, description="Outer-loop segments before a puzzle must halt (the paper's M_max)")
    explore: float = Field(0.1, ge=0, le=1, description="ACT exploration: share of slots given a random minimum of 2..M segments")
    q_weight: float = Field(0.5, ge=0, description="Weight of the halting head's loss")


class Config(RecipeConfig):
    puzzles: PuzzleSection = PuzzleSection()
    model: ModelSection = ModelSection()
    arms: list[Literal["hrm", "looped-transformer", "transformer"]] = Field(
        list(ARMS), description="Which arms to train (the claims need all three)")
    train: HRMTrain = HRMTrain(max_steps=1000, lr=1e-3, weight_decay=0.1, warmup_steps=50, schedule="cosine",
                               log_every=10, eval_every=250, tensorboard=False)
    eval_batch: int = Field(500, ge=1, description="Held-out puzzles per forward pass")


def check(cfg: Config) -> list[str]:
    problems = []
    if cfg.model.d_model % cfg.model.n_heads:
        problems.append(f"model.d_model={cfg.model.d_model} is not a multiple of n_heads={cfg.model.n_heads} "
                        "(hint: e.g. model.d_model=64 model.n_heads=4)")
    cells = 36 if cfg.puzzles.board == "6x6" else 81
    if cfg.puzzles.min_clues >= cells:
        problems.append(f"puzzles.min_clues={cfg.puzzles.min_clues} leaves nothing to solve on a {cfg.puzzles.board} board "
                        f"(hint: use a value below {cells}, or 0 for minimal puzzles)")
    if len(set(cfg.arms)) != len(cfg.arms):
        problems.append("an arm is listed twice (hint: list each of hrm, looped-transformer, transformer once)")
    return problems


def plan(cfg: Config) -> str:
    p = cfg.puzzles
    return (f"generate {p.train} train + {p.dev} dev + {p.test} test {p.board} puzzles (min clues {p.min_clues}, min guesses {p.min_guesses}); "
            f"train {', '.join(cfg.arms)}: {cfg.train.max_steps} steps x {cfg.train.batch_size} slots, up to "
            f"{cfg.train.max_segments} segments per puzzle")


def run(cfg: Config, ctx: Run) -> None:
    import time

    from labcli import runs
    from labcli.data import sudoku
    from labcli.engine.distributed import pick_device
    from labcli.errors import UserError

    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    device = pick_device(cfg.device)
    runs.seed_everything(cfg.seed)
    shape, p = sudoku.SHAPES[cfg.puzzles.board], cfg.puzzles
    t0 = time.perf_counter()
    train_set = sudoku.generate(shape, p.train, cfg.seed, p.min_clues, p.min_guesses, p.workers)
    test_set = sudoku.generate(shape, p.test, cfg.seed + 1, p.min_clues, p.min_guesses, p.workers, exclude=train_set)
    dev_set = sudoku.generate(shape, p.dev, cfg.seed + 2, p.min_clues, p.min_guesses, p.workers,
                              exclude=[train_set, test_set])
    gen_s = time.perf_counter() - t0
    print(f"{p.train} training, {p.dev} dev and {p.test} test {p.board} puzzles with unique solutions ({gen_s:.0f} s): "
          f"{test_set.stats()}", flush=True)
    found = {"puzzles": {"train": train_set.stats(), "dev": dev_set.stats(), "test": test_set.stats(),
                         "generate_s": gen_s, "example": sudoku.render(shape, test_set.puzzles[0])}, "arms": {}}
    for arm in cfg.arms:
        found["arms"][arm] = train_arm(cfg, ctx.sub(arm), arm, train_set, dev_set, test_set, device)
    if not ctx.is_main:
        return
    claims = claims_for(cfg, found)
    write_results(cfg, ctx, found, claims)


def model_config(cfg: Config, shape):
    from labcli.models.hrm import HRMConfig

    return HRMConfig(vocab=shape.n + 1, cells=shape.cells, **cfg.model.model_dump())


def train_arm(cfg: Config, ctx: Run, arm: str, train_set, dev_set, test_set, device) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F

    from labcli.data import sudoku
    from labcli.engine.loop import fit
    from labcli.eval import stats
    from labcli.models.hrm import act_step, build, new_carry, segment_flops

    shape, tc = train_set.shape, cfg.train
    segments = 1 if arm == "transformer" else tc.max_segments
    torch.manual_seed(cfg.seed)
    model = build(arm, model_config(cfg, shape))
    params = sum(p.numel() for p in model.parameters())
    flops = segment_flops(model)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    vocab = shape.n + 1

    def next_puzzles(k: int):
        idx = rng.integers(0, len(train_set), k)
        puzzles, solutions = train_set.puzzles[idx], train_set.solutions[idx]
        if cfg.puzzles.augment:
            puzzles, solutions = sudoku.augment(shape, puzzles, solutions, rng)
        return torch.from_numpy(puzzles).long(), torch.from_numpy(solutions).long()

    carry = new_carry(model, tc.batch_size, device)

    def step(loop, i):
        nonlocal carry
        with loop.autocast():
            carry, logits, q = act_step(loop.model, carry, next_puzzles, segments, tc.explore, gen)
            logits, q = logits.float(), q.float()
        solved = (logits.argmax(-1) == carry.solutions).all(-1)
        loss = F.cross_entropy(logits.reshape(-1, vocab), carry.solutions.reshape(-1))
        total = loss
        if segments > 1:
            q_loss = F.binary_cross_entropy_with_logits(q, solved.float())
            total = loss + tc.q_weight * q_loss
        total.backward()
        loop.state["puzzles"] = loop.state.get("puzzles", 0) + int(carry.halted.sum())
        return {"loss": loss.item(), "grad_norm": loop.update(), "solved": solved.float().mean().item(),
                "segments": carry.steps.float().mean().item(), "halted": carry.halted.float().mean().item()}

    def evaluate(loop, i):  # the training curve looks at dev only
        loop.model.eval()
        found = solve_rate(loop.model, dev_set, segments, cfg.eval_batch, device)
        loop.model.train()
        return {"dev_exact": float(found["exact"].float().mean())}

    result = fit(model, step, ctx, tc, device=device, seed=cfg.seed, evaluate=evaluate, progress=False)
    model = result.model.eval()
    dev_exact = float(solve_rate(model, dev_set, segments, cfg.eval_batch, device)["exact"].float().mean())
    found = solve_rate(model, test_set, segments, cfg.eval_batch, device)
    exact, ok, stop = found["exact"], found["by_segment"], found["act_stop"]
    n, acc = len(exact), float(exact.float().mean())
    out = {"params": params, "segment_mflops": flops / 1e6, "segments": segments,
           "train_s": result.wall_s, "puzzles_seen": int(result.state.get("puzzles", 0)), "dev_exact": dev_exact,
           "exact": acc, "exact_ci": list(stats.wilson(int(exact.sum()), n)),
           "exact_by_segment": [float(o.float().mean()) for o in ok], "blank_cell_accuracy": found["blank_cell_accuracy"],
           "act_exact": float(found["act_exact"].float().mean()), "act_mean_segments": float((stop + 1).float().mean()),
           "solved": exact.int().tolist(), "final_loss": result.metrics.get("loss")}
    ctx.write_summary({k: v for k, v in out.items() if k != "solved"})
    print(f"{arm}: exact {100 * acc:.1f} % [{100 * out['exact_ci'][0]:.1f}, {100 * out['exact_ci'][1]:.1f}] of {n}; "
          f"by segment {[round(100 * x, 1) for x in out['exact_by_segment']]}; {result.wall_s:.0f} s", flush=True)
    return out


def solve_rate(model, puzzle_set, segments: int, batch: int, device) -> dict:
    """Run every puzzle for all `segments`: per puzzle, solved after each segment [segments, N], solved after
    the last (`exact`), solved where ACT stops (the first segment whose halt logit is positive, else the
    last), and the accuracy on blank cells after the last segment."""
    import torch

    from labcli.models.hrm import solve_all

    puzzles = torch.from_numpy(puzzle_set.puzzles).long().to(device)
    solutions = torch.from_numpy(puzzle_set.solutions).long().to(device)
    ok, q, blank_right = [], [], []
    for s in range(0, len(puzzles), batch):
        preds, qs = solve_all(model, puzzles[s:s + batch], segments)
        truth, blanks = solutions[s:s + batch], puzzles[s:s + batch] == 0
        ok.append(torch.stack([(p == truth).all(-1) for p in preds]).cpu())  # [segments, batch]
        q.append(torch.stack(qs).float().cpu())
        blank_right.append((preds[-1] == truth)[blanks].cpu())
    ok, q = torch.cat(ok, 1), torch.cat(q, 1)
    last = torch.full((ok.shape[1],), segments - 1, dtype=torch.long)
    stop = torch.where((q > 0).any(0), (q > 0).int().argmax(0), last)
    return {"by_segment": ok, "exact": ok[-1], "act_stop": stop, "act_exact": ok.gather(0, stop[None])[0],
            "blank_cell_accuracy": float(torch.cat(blank_right).float().mean())}


def effect(found: dict, a: str, b: str, seed: int) -> dict | None:
    from labcli.eval import stats

    arms = found["arms"]
    if a not in arms or b not in arms:
        return None
    return stats.paired_difference(arms[a]["solved"], arms[b]["solved"], seed=seed)


def claims_for(cfg: Config, f: dict):
    from labcli.eval.claims import Claim

    arms, p, tc = f["arms"], cfg.puzzles, cfg.train
    setting = (f"{p.board}, {f['puzzles']['test']['clues_mean']:.0f} clues on average, {p.train} train / {p.test} "
               f"held-out puzzles; ~{next(iter(arms.values()))['params'] / 1e3:.0f}K params per arm; {tc.max_steps} "
               f"steps x {tc.batch_size}; M = {tc.max_segments}")

    def pct(arm):
        a = arms[arm]
        return f"{100 * a['exact']:.1f} % [{100 * a['exact_ci'][0]:.1f}, {100 * a['exact_ci'][1]:.1f}]"

    def sign(e):
        if e["low"] > 0:
            return "positive"
        if e["high"] < 0:
            return "negative"
        return "not resolved (interval spans 0)"

    def diff_text(e):
        return f"{100 * e['diff']:+.1f} pts [{100 * e['low']:+.1f}, {100 * e['high']:+.1f}], {sign(e)}"

    claims = []
    if "hrm" in arms:
        claims.append(Claim("HRM solves hard Sudoku from 1,000 examples",
                            f"{PAPER}: 55.0 % exact on Sudoku-Extreme (9x9), 27M params; a public replication: 45.8 %",
                            setting, f"HRM {pct('hrm')} exact",
                            "holds" if arms["hrm"]["exact"] >= 0.5 else "partly" if arms["hrm"]["exact_ci"][0] > 0.05
                            else "does not hold"))
    loop = effect(f, "looped-transformer", "transformer", cfg.seed)
    if loop:
        claims.append(Claim("the outer refinement loop drives most of the gain",
                            "ARC Prize analysis of HRM (2025): the outer loop (deep supervision + refinement) gives "
                            "most of the improvement over a single pass",
                            setting, f"looped {pct('looped-transformer')} vs single pass {pct('transformer')}: "
                            + diff_text(loop),
                            "holds" if loop["low"] > 0 else "does not hold" if loop["high"] < 0 else "partly"))
    hier = effect(f, "hrm", "looped-transformer", cfg.seed)
    if hier:
        e = hier
        floor = max(arms["hrm"]["exact"], arms["looped-transformer"]["exact"]) == 0
        claims.append(Claim("HRM's hierarchy adds little over a looped transformer of equal size",
                            "ARC Prize analysis: a plain transformer in the same loop comes within ~5 points; "
                            f"{PAPER} report HRM far above transformers",
                            setting, f"HRM {pct('hrm')} vs looped {pct('looped-transformer')}: " + diff_text(e)
                            + ("; both solve nothing, so untested here" if floor else ""),
                            "partly" if floor else "holds" if e["low"] > -0.05 and e["high"] < 0.05 else
                            "partly" if abs(e["diff"]) <= 0.05 else "does not hold"))
    return claims


def scale_gap(cfg: Config) -> str:
    return ("The paper trains a 27M-parameter HRM (4+4 layers, width 512, N = T = 2, up to 16 segments) on 1,000 "
            "Sudoku-Extreme puzzles (9x9, hard by solver backtracks) with 1,000-fold augmentation for about 20,000 "
            f"epochs on GPUs. Here: {cfg.puzzles.board} boards, width {cfg.model.d_model}, {cfg.model.layers}+"
            f"{cfg.model.layers} layers, up to {cfg.train.max_segments} segments, {cfg.train.max_steps} steps of "
            f"{cfg.train.batch_size} slots, one seed: the models are far from converged, so this measures the "
            "effects early in training at equal steps (HRM spends about 3x the FLOPs per segment). The GPU "
            "variant (`lab reproduce hrm-gpu`) is 9x9 puzzles that need search, a wider model and many more steps.")


def write_results(cfg: Config, ctx: Run, f: dict, claims) -> None:
    from labcli.eval import claims as claims_table
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table

    arms = f["arms"]
    rows = [{"arm": name, "params": a["params"], "MFLOPs/segment": round(a["segment_mflops"], 2),
             "segments": a["segments"], "dev exact %": round(100 * a["dev_exact"], 1), "exact %": round(100 * a["exact"], 1),
             "95% CI": f"[{100 * a['exact_ci'][0]:.1f}, {100 * a['exact_ci'][1]:.1f}]",
             "blank cells %": round(100 * a["blank_cell_accuracy"], 1),
             "ACT exact % (mean segments)": f"{100 * a['act_exact']:.1f} ({a['act_mean_segments']:.2f})",
             "puzzles seen": a["puzzles_seen"], "train s": round(a["train_s"])} for name, a in arms.items()]
    effects = {"outer_loop": effect(f, "looped-transformer", "transformer", cfg.seed),
               "hierarchy": effect(f, "hrm", "looped-transformer", cfg.seed)}
    summary = {"paper": PAPER, "claims": claims_table.rows(claims), "table": rows, "effects": effects,
               "puzzles": f["puzzles"],
               "arms": {n: {k: v for k, v in a.items() if k != "solved"} for n, a in arms.items()}}
    ctx.write_summary(summary)
    M = cfg.train.max_segments
    curve = [{"segment": s + 1, **{n: a["exact_by_segment"][min(s, len(a["exact_by_segment"]) - 1)] for n, a in arms.items()}}
             for s in range(M)]
    plots.curves(curve, list(arms), ctx.path("exact_by_segment.png"), "held-out exact-solve accuracy after each segment",
                 x="segment")
    train_curves = []
    for name in arms:
        for r in ctx.sub(name).metrics():
            if "solved" in r:
                train_curves.append({"step": r["step"], f"{name} loss": r["loss"]})
    plots.curves(train_curves, [f"{n} loss" for n in arms], ctx.path("train_loss.png"), "training cross-entropy per cell")
    report = [
        f"# lab reproduce hrm ({PAPER})\n\n",
        claims_table.markdown(claims, scale_gap(cfg)),
        "\n## Arms\n\n", markdown_table(rows),
        "\nExact: every cell right after the last segment, on the test puzzles (dev exact: the same on the dev puzzles, "
        "which the training curves watch). ACT: stop at the first segment whose halting logit is "
        "positive. Effects are paired differences on the same held-out puzzles (95 % bootstrap intervals).\n\n",
        f"Puzzles: train {f['puzzles']['train']}; dev {f['puzzles']['dev']}; test {f['puzzles']['test']}. A test puzzle:\n\n```\n"
        f"{f['puzzles']['example']}\n```\n\n![exact by segment](exact_by_segment.png)\n\n![training loss](train_loss.png)\n",
    ]
    ctx.write_report("".join(report))
    print_table(rows, title="lab reproduce hrm: arms")
    claims_table.print_claims(claims, f"lab reproduce hrm: {PAPER}")
    print("exact-solve on test: " + ", ".join(f"{n} {100 * a['exact']:.1f} %" for n, a in arms.items())
          + f"; {sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold")
