"""`lab reproduce dit`: Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", at toy scale.

Class-conditional DiTs (labcli.models.dit) learn the shipped handwritten digits (labcli.data.digits,
upsampled), in pixel space (no VAE), with diffusers' DDPM noise schedule for training and DDIM for
sampling, and classifier-free guidance (the class is dropped to a null class 10 % of the time). The
arms are the paper's ablations: four ways to condition on (t, class) (in-context tokens,
cross-attention, adaLN, adaLN-Zero) at one patch size, and adaLN-Zero at a smaller patch (more
tokens, more Gflops). Every arm trains on the engine for the same steps and batch.

Measured per arm: the test diffusion loss (the same noise and timesteps for every arm, with a
95 % interval over items), and on samples at guidance 1 and 4 (same starting noise for every arm):
a digits classifier's accuracy (trained here on the real training split, on the engine) and a
Fréchet distance in that classifier's feature space to the real training images (FD; the real
test images give its floor). The data are split train / dev / test: training curves (and any
choice of settings) look at dev only; the reported numbers are on test. Also checked exactly: adaLN-Zero's output is 0 at
initialisation, while diffusers' DiTTransformer2DModel at the same shape is not.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.engine.loop import LoopConfig
from labcli.runs import Run

PAPER = "Peebles & Xie 2023"


class Arm(Section):
    conditioning: Literal["in-context", "cross-attention", "adaln", "adaln-zero"] = Field(
        "adaln-zero", description="How blocks see (t, class)")
    patch: int = Field(4, ge=1, description="Patch side in pixels (smaller: more tokens, more Gflops)")

    @property
    def name(self) -> str:
        return f"{self.conditioning}/p{self.patch}"


class ModelSection(Section):
    d_model: int = Field(64, ge=8, description="Token width")
    depth: int = Field(4, ge=1, description="Transformer blocks")
    n_heads: int = Field(4, ge=1, description="Attention heads")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / d_model")


class DiffusionSection(Section):
    timesteps: int = Field(1000, ge=10, description="Diffusion steps T (the paper's 1000)")
    beta_start: float = Field(1e-4, gt=0, description="Linear beta schedule start (the paper's)")
    beta_end: float = Field(0.02, gt=0, description="Linear beta schedule end (the paper's)")
    class_dropout: float = Field(0.1, ge=0, le=1, description="Share of training labels replaced by the null class (for CFG)")
    sample_steps: int = Field(25, ge=1, description="DDIM steps when sampling")


class DiTTrain(LoopConfig):
    batch_size: int = Field(64, ge=1, description="Images per step")


class ClassifierTrain(LoopConfig):
    batch_size: int = Field(64, ge=1, description="Images per step")


DEFAULT_ARMS = [Arm(conditioning=c, patch=4) for c in ("in-context", "cross-attention", "adaln", "adaln-zero")] + [
    Arm(conditioning="adaln-zero", patch=2)]


class Config(RecipeConfig):
    data: Literal["digits-8x8", "mnist5k"] = Field("digits-8x8", description="Shipped digits (see labcli.data.digits)")
    image_size: int = Field(16, ge=4, description="Images are resized (upsampled) to this side")
    arms: list[Arm] = Field(DEFAULT_ARMS, description="Conditioning x patch size; the claims need the 4 schemes at one patch and adaLN-Zero at two")
    model: ModelSection = ModelSection()
    diffusion: DiffusionSection = DiffusionSection()
    guidance: list[float] = Field([1.0, 4.0], description="CFG scales to sample at (1 = no guidance)")
    samples_per_class: int = Field(30, ge=2, description="Samples per class and guidance scale, for accuracy and FD")
    val_draws: int = Field(2, ge=1, description="(noise, timestep) draws per dev / test image for the diffusion loss")
    seeds: int = Field(1, ge=1, description="Training seeds per arm (seed, seed+1, ...); >1 adds the spread over seeds")
    train: DiTTrain = DiTTrain(max_steps=800, lr=1e-3, warmup_steps=50, schedule="cosine", eval_every=100,
                               tensorboard=False)
    classifier: ClassifierTrain = ClassifierTrain(max_steps=300, lr=2e-3, schedule="cosine", log_every=50,
                                                  tensorboard=False)


def check(cfg: Config) -> list[str]:
    problems = []
    for arm in cfg.arms:
        if cfg.image_size % arm.patch:
            problems.append(f"patch {arm.patch} does not divide image_size {cfg.image_size} "
                            f"(hint: use a patch that divides {cfg.image_size}, e.g. 2 or 4)")
    if cfg.model.d_model % cfg.model.n_heads or cfg.model.d_model % 4:
        problems.append(f"model.d_model={cfg.model.d_model} must be a multiple of n_heads={cfg.model.n_heads} and of 4 "
                        "(hint: e.g. model.d_model=64 model.n_heads=4)")
    if len({a.name for a in cfg.arms}) != len(cfg.arms):
        problems.append("two arms have the same conditioning and patch (hint: list each arm once)")
    if 1.0 not in cfg.guidance or len(cfg.guidance) < 2:
        problems.append("guidance must include 1 and at least one other scale (hint: guidance=[1,4])")
    return problems


def plan(cfg: Config) -> str:
    arms = ", ".join(a.name for a in cfg.arms)
    return (f"{len(cfg.arms)} arms x {cfg.seeds} seed(s) ({arms}), {cfg.train.max_steps} steps of {cfg.train.batch_size} "
            f"{cfg.image_size}x{cfg.image_size} images each; {10 * cfg.samples_per_class} samples per arm at guidance "
            f"{cfg.guidance} ({cfg.diffusion.sample_steps} DDIM steps)")


def run(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.data import digits
    from labcli.engine.distributed import pick_device
    from labcli.errors import UserError
    from labcli.eval import frechet

    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    device = pick_device(cfg.device)
    runs.seed_everything(cfg.seed)
    data = digits.load(cfg.data, cfg.image_size, cfg.seed)
    clf, clf_accuracy = train_classifier(cfg, ctx.sub("classifier"), data, device)
    reference = frechet.stats(features(clf, data.train_x, device))
    n = 10 * cfg.samples_per_class
    floor_x = data.test_x[:n]
    floor = frechet.bootstrap(features(clf, floor_x, device), reference, seed=cfg.seed)
    found = {"data": data.describe(), "classifier_test_accuracy": clf_accuracy,
             "fd_floor": {"fd": floor[0], "sd": floor[1], "images": len(floor_x)},
             "zero_init": zero_init_check(cfg), "arms": []}
    val = {"dev": noise_items(cfg, data.dev_x, data.dev_y, 7919), "test": noise_items(cfg, data.test_x, data.test_y, 7907)}
    for arm in cfg.arms:
        for k in range(cfg.seeds):
            name = arm.name.replace("/", "-") + (f"-seed{cfg.seed + k}" if cfg.seeds > 1 else "")
            found["arms"].append(train_arm(cfg, ctx.sub(name), arm, cfg.seed + k, data, val, clf, reference, device))
    if not ctx.is_main:
        return
    found["by_arm"] = aggregate(cfg, found["arms"])
    claims = claims_for(cfg, found)
    write_results(cfg, ctx, found, claims)


# ----------------------------------------------------------------------------- the digits classifier


def train_classifier(cfg: Config, ctx: Run, data, device):
    """The small MNIST CNN of labcli.detect.vision, trained on the real training split on the engine;
    its curve is on dev, its reported accuracy on test."""
    import torch
    import torch.nn.functional as F

    from labcli.detect.vision import SmallCNN
    from labcli.engine.loop import fit

    x, y = data.train_x.to(device), data.train_y.to(device)
    model = SmallCNN(side=cfg.image_size)

    def step(loop, i):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + i)
        idx = torch.randint(0, len(y), (cfg.classifier.batch_size,), generator=g).to(device)
        loss = F.cross_entropy(loop.model(x[idx]), y[idx])
        loss.backward()
        return {"loss": loss.item(), "grad_norm": loop.update()}

    def evaluate(loop, i):
        loop.model.eval()
        with torch.no_grad():
            acc = (loop.model(data.dev_x.to(device)).argmax(1).cpu() == data.dev_y).float().mean().item()
        loop.model.train()
        return {"dev_accuracy": acc}

    result = fit(model, step, ctx, cfg.classifier, device=device, seed=cfg.seed, evaluate=evaluate, progress=False)
    clf = result.model.eval()
    with torch.no_grad():
        test_acc = (clf(data.test_x.to(device)).argmax(1).cpu() == data.test_y).float().mean().item()
    return clf, test_acc


def features(clf, images, device, batch: int = 512):
    """Penultimate features of images in [0, 1]."""
    import torch

    with torch.no_grad():
        return torch.cat([clf.features(images[i:i + batch].to(device)).cpu() for i in range(0, len(images), batch)]).numpy()


# ----------------------------------------------------------------------------- one arm


def noise_items(cfg: Config, images, labels, salt: int) -> dict:
    """Fixed (image, label, timestep, noise) for the diffusion loss on a held-out split: the same for every arm."""
    import torch

    g = torch.Generator().manual_seed(cfg.seed + salt)
    x0 = (images * 2 - 1).repeat(cfg.val_draws, 1, 1, 1)
    return {"x0": x0, "y": labels.repeat(cfg.val_draws), "t": torch.randint(0, cfg.diffusion.timesteps, (len(x0),), generator=g),
            "noise": torch.randn(x0.shape, generator=g)}


def diffusion_loss(model, train_sched, val: dict, device, batch: int = 512):
    """Per-item MSE between predicted and true noise (the training loss, conditional, no dropout)."""
    import torch

    losses = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(val["y"]), batch):
            x0, noise = val["x0"][i:i + batch].to(device), val["noise"][i:i + batch].to(device)
            t, y = val["t"][i:i + batch].to(device), val["y"][i:i + batch].to(device)
            xt = train_sched.add_noise(x0, noise, t)
            losses.append((model(xt, t, y) - noise).pow(2).flatten(1).mean(1).cpu())
    model.train()
    return torch.cat(losses)


def train_arm(cfg: Config, ctx: Run, arm: Arm, seed: int, data, val: dict, clf, reference, device) -> dict:
    import torch
    import torch.nn.functional as F

    from labcli.engine.loop import fit
    from labcli.eval import frechet, stats
    from labcli.models.dit import DiT, DiTConfig, forward_gflops, sample, schedulers

    d = cfg.diffusion
    torch.manual_seed(seed)
    model = DiT(DiTConfig(image_size=cfg.image_size, channels=1, patch=arm.patch, classes=10,
                          conditioning=arm.conditioning, **cfg.model.model_dump()))
    params, gflops = sum(p.numel() for p in model.parameters()), forward_gflops(model)
    train_sched, sample_sched = schedulers(d.timesteps, d.beta_start, d.beta_end)
    x_train, y_train = (data.train_x * 2 - 1).to(device), data.train_y
    B = cfg.train.batch_size

    def step(loop, i):
        g = torch.Generator().manual_seed(seed * 1_000_003 + i)  # the batch is a function of (seed, step)
        idx = torch.randint(0, len(y_train), (B,), generator=g)
        t = torch.randint(0, d.timesteps, (B,), generator=g)
        noise = torch.randn((B,) + tuple(x_train.shape[1:]), generator=g)
        y = torch.where(torch.rand(B, generator=g) < d.class_dropout, 10, y_train[idx])  # 10: the null class
        idx, t, noise, y = idx.to(device), t.to(device), noise.to(device), y.to(device)
        xt = train_sched.add_noise(x_train[idx], noise, t)
        with loop.autocast():
            loss = F.mse_loss(loop.model(xt, t, y).float(), noise)
        loss.backward()
        return {"loss": loss.item(), "grad_norm": loop.update()}

    def evaluate(loop, i):
        return {"eval_loss": diffusion_loss(loop.model, train_sched, val["dev"], device).mean().item()}  # dev only

    result = fit(model, step, ctx, cfg.train, device=device, seed=seed, evaluate=evaluate, eval_at_start=True,
                 progress=False)
    model = result.model.eval()
    test_losses = diffusion_loss(model, train_sched, val["test"], device)
    loss_mean, loss_low, loss_high = stats.mean_ci(test_losses.numpy())
    labels = torch.arange(10).repeat_interleave(cfg.samples_per_class)
    start = torch.randn((len(labels), 1, cfg.image_size, cfg.image_size), generator=torch.Generator().manual_seed(cfg.seed + 104729))
    by_scale, grids = {}, {}
    for scale in cfg.guidance:
        x = sample(model, sample_sched, labels.to(device), scale, d.sample_steps, start.to(device))
        images = ((x.clamp(-1, 1) + 1) / 2).cpu()
        with torch.no_grad():
            pred = clf(images.to(device)).argmax(1).cpu()
        correct = (pred == labels)
        fd, fd_sd = frechet.bootstrap(features(clf, images, device), reference, seed=cfg.seed)
        by_scale[str(scale)] = {
            "accuracy": correct.float().mean().item(), "accuracy_ci": list(stats.wilson(int(correct.sum()), len(correct))),
            "accuracy_per_class": [correct[labels == c].float().mean().item() for c in range(10)],
            "correct": correct.int().tolist(), "fd": fd, "fd_sd": fd_sd}
        grids[str(scale)] = images.view(10, cfg.samples_per_class, cfg.image_size, cfg.image_size)[:, :8].numpy()
    ctx.write_summary({"arm": arm.name, "seed": seed, "test_loss": loss_mean, "by_scale": by_scale})
    curve = [{"step": r["step"], "eval_loss": r["eval_loss"]} for r in ctx.metrics() if "eval_loss" in r]
    print(f"{arm.name} (seed {seed}): test loss {loss_mean:.4f}, "
          + ", ".join(f"CFG {s}: acc {v['accuracy']:.2f} FD {v['fd']:.1f}" for s, v in by_scale.items())
          + f" ({result.wall_s:.0f} s)", flush=True)
    return {"arm": arm.name, "conditioning": arm.conditioning, "patch": arm.patch, "seed": seed, "params": params,
            "gflops": gflops, "tokens": (cfg.image_size // arm.patch) ** 2, "test_loss": loss_mean,
            "test_loss_ci": [loss_low, loss_high], "test_items": test_losses.numpy().tolist(), "by_scale": by_scale,
            "curve": curve, "train_s": result.wall_s, "grids": grids}


def zero_init_check(cfg: Config) -> dict:
    """max |output| at initialisation: our adaLN-Zero DiT (exactly 0) vs diffusers' DiTTransformer2DModel
    at the same shape (not zero-initialised), on the same random input."""
    import torch

    from labcli.models.dit import DiT, DiTConfig, diffusers_dit

    shape = DiTConfig(image_size=cfg.image_size, channels=1, patch=4 if cfg.image_size % 4 == 0 else 1, classes=10,
                      conditioning="adaln-zero", **cfg.model.model_dump())
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn((16, 1, cfg.image_size, cfg.image_size), generator=g)
    t, y = torch.randint(0, 1000, (16,), generator=g), torch.randint(0, 10, (16,), generator=g)
    torch.manual_seed(cfg.seed)
    with torch.no_grad():
        ours = DiT(shape)(x, t, y).abs().max().item()
        theirs = diffusers_dit(shape, seed=cfg.seed)(x, timestep=t, class_labels=y).sample.abs().max().item()
    return {"ours_max_abs": ours, "diffusers_max_abs": theirs, "patch": shape.patch}


# ----------------------------------------------------------------------------- claims and report


def aggregate(cfg: Config, arms: list[dict]) -> dict:
    """Per arm name: means over seeds (and the spread when seeds > 1)."""
    import numpy as np

    out = {}
    for arm in cfg.arms:
        rows = [a for a in arms if a["arm"] == arm.name]
        entry = {"gflops": rows[0]["gflops"], "params": rows[0]["params"], "tokens": rows[0]["tokens"],
                 "test_loss": float(np.mean([r["test_loss"] for r in rows])),
                 "test_loss_ci": rows[0]["test_loss_ci"] if len(rows) == 1 else None,
                 "test_loss_seed_sd": float(np.std([r["test_loss"] for r in rows], ddof=1)) if len(rows) > 1 else None,
                 "train_s": float(np.mean([r["train_s"] for r in rows]))}
        for scale in map(str, cfg.guidance):
            acc = [r["by_scale"][scale]["accuracy"] for r in rows]
            fd = [r["by_scale"][scale]["fd"] for r in rows]
            entry[f"acc@{scale}"] = float(np.mean(acc))
            entry[f"fd@{scale}"] = float(np.mean(fd))
            entry[f"fd_sd@{scale}"] = (float(np.std(fd, ddof=1)) if len(rows) > 1
                                       else rows[0]["by_scale"][scale]["fd_sd"])
        out[arm.name] = entry
    return out


NOISE_RULE = "a win counts only beyond 1.96 x the combined standard error"


def clearly_lower(by: dict, a: str, b: str, key: str) -> bool:
    """Arm a's `key` (test_loss or fd@SCALE) is below arm b's by more than 1.96 standard errors of the
    difference (loss: from its 95 % interval over items, or the seeds' sd; FD: its bootstrap sd)."""
    import math

    def se(e: dict) -> float:
        if key == "test_loss":
            return (e["test_loss_ci"][1] - e["test_loss_ci"][0]) / 3.92 if e["test_loss_ci"] else e["test_loss_seed_sd"]
        return e[key.replace("fd@", "fd_sd@")]

    return by[b][key] - by[a][key] > 1.96 * math.hypot(se(by[a]), se(by[b]))


def claims_for(cfg: Config, f: dict):
    from labcli.eval import stats
    from labcli.eval.claims import Claim

    by = f["by_arm"]
    g1, gmax = "1.0", str(max(cfg.guidance))
    setting = (f"{f['data']}; DiT d={cfg.model.d_model}, depth {cfg.model.depth}, pixel space; {cfg.train.max_steps} steps "
               f"x {cfg.train.batch_size}; {10 * cfg.samples_per_class} samples, {cfg.diffusion.sample_steps} DDIM steps"
               + (f"; {cfg.seeds} seeds" if cfg.seeds > 1 else ""))
    claims = []
    z = f["zero_init"]
    claims.append(Claim("adaLN-Zero starts as the identity: the model's output at init is exactly 0",
                        f"{PAPER}: every block's gate and the final layer zero-initialised (official code)",
                        "same random input; diffusers DiTTransformer2DModel at the same shape for contrast",
                        f"ours max|out| = {z['ours_max_abs']:.3g}; diffusers' = {z['diffusers_max_abs']:.3g}",
                        "holds" if z["ours_max_abs"] == 0.0 else "does not hold"))
    schemes = {name: e for name, e in by.items() if name.split("/")[0] in
               ("in-context", "cross-attention", "adaln", "adaln-zero")}
    patches = {}
    for name in schemes:
        patches.setdefault(name.split("/p")[1], []).append(name)
    full = [names for names in patches.values() if len(names) == 4]
    if full:
        names = full[0]
        best_loss = min(names, key=lambda n: by[n]["test_loss"])
        best_fd = min(names, key=lambda n: by[n][f"fd@{g1}"])
        zero = next(n for n in names if n.startswith("adaln-zero"))
        wins = sum(all(clearly_lower(by, zero, other, key) for other in names if other != zero)
                   for key in ("test_loss", f"fd@{g1}"))
        text = "; ".join(f"{n.split('/')[0]} {by[n]['test_loss']:.4f} / {by[n][f'fd@{g1}']:.1f}" for n in names)
        claims.append(Claim("adaLN-Zero is the best of the four conditioning schemes",
                            f"{PAPER} Fig. 5: lowest FID-50K at every stage of training to 400K steps (DiT-XL/2, "
                            "ImageNet 256, no guidance)",
                            setting + f"; patch {names[0].split('/p')[1]}",
                            f"test loss / FD (no guidance): {text}; best: {best_loss} / {best_fd}; {NOISE_RULE}",
                            {2: "holds", 1: "partly", 0: "does not hold"}[wins]))
    zeros = sorted((n for n in by if n.startswith("adaln-zero/")), key=lambda n: by[n]["gflops"])
    if len(zeros) >= 2:
        small, big = zeros[0], zeros[-1]
        better = clearly_lower(by, big, small, "test_loss") + clearly_lower(by, big, small, f"fd@{g1}")
        claims.append(Claim("smaller patches (more tokens, more Gflops) give better samples",
                            f"{PAPER} Fig. 2/6, Table 4: FID falls as the patch shrinks 8 -> 4 -> 2 at fixed model size "
                            "(DiT-XL/2: 118.6 Gflops)",
                            setting,
                            f"{big} ({by[big]['gflops'] * 1e3:.1f} MFLOPs) vs {small} ({by[small]['gflops'] * 1e3:.1f}): "
                            f"test loss {by[big]['test_loss']:.4f} vs {by[small]['test_loss']:.4f}, FD {by[big][f'fd@{g1}']:.1f} "
                            f"vs {by[small][f'fd@{g1}']:.1f}; {NOISE_RULE}",
                            {2: "holds", 1: "partly", 0: "does not hold"}[better]))
    if not f["arms"] or any("correct" not in r["by_scale"][g1] for r in f["arms"]):
        return claims  # per-sample results absent (a published summary): the guidance claim needs them
    diffs = []
    for name in by:
        rows = [a for a in f["arms"] if a["arm"] == name]
        a = sum((r["by_scale"][gmax]["correct"] for r in rows), [])
        b = sum((r["by_scale"][g1]["correct"] for r in rows), [])
        diffs.append((name, stats.paired_difference(a, b, seed=cfg.seed)))
    pooled_a = sum((r["by_scale"][gmax]["correct"] for r in f["arms"]), [])
    pooled_b = sum((r["by_scale"][g1]["correct"] for r in f["arms"]), [])
    pooled = stats.paired_difference(pooled_a, pooled_b, seed=cfg.seed)
    up = sum(d["diff"] > 0 for _, d in diffs)
    # pooled over arms, paired on the same labels and starting noise; noise alone never makes it partly
    v = "holds" if pooled["low"] > 0 and up == len(diffs) else "partly" if pooled["low"] > 0 else "does not hold"
    claims.append(Claim(f"classifier-free guidance raises class accuracy (CFG {gmax} vs 1)",
                        f"{PAPER} Table 2: guidance 1.5 takes DiT-XL/2's FID from 9.62 to 2.27 (sharper, more "
                        "class-consistent samples; Ho & Salimans 2022)",
                        setting,
                        "; ".join(f"{n} {100 * by[n][f'acc@{g1}']:.0f} -> {100 * by[n][f'acc@{gmax}']:.0f} %" for n, _ in diffs)
                        + f"; pooled +{100 * pooled['diff']:.1f} pts [{100 * pooled['low']:.1f}, {100 * pooled['high']:.1f}]",
                        v))
    return claims


def scale_gap(cfg: Config) -> str:
    return (f"The paper trains DiT-XL (675M parameters, 28 blocks, width 1152) on ImageNet 256x256 through a VAE "
            f"(32x32x4 latents), 400K steps of batch 256 for the ablations, and scores FID-50K in Inception features "
            f"after 250 DDPM steps with EMA weights and a learned variance. Here: {cfg.model.depth} blocks of width "
            f"{cfg.model.d_model} on {cfg.image_size}x{cfg.image_size} digits in pixel space, {cfg.train.max_steps} steps "
            f"of batch {cfg.train.batch_size}, no EMA, noise prediction only, {cfg.diffusion.sample_steps} DDIM steps, and "
            f"FD on {10 * cfg.samples_per_class} samples in a small CNN's 128-d features: FDs compare arms of this run "
            f"only (few samples bias FD upward; the real test images' FD is the floor). One training seed per "
            f"arm unless seeds > 1: the intervals cover evaluation noise, not training-seed spread.")


def write_results(cfg: Config, ctx: Run, f: dict, claims) -> None:
    from labcli.eval import claims as claims_table
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table

    g1, gmax = "1.0", str(max(cfg.guidance))
    rows = []
    for name, e in f["by_arm"].items():
        row = {"arm": name, "tokens": e["tokens"], "params": e["params"], "MFLOPs/image": round(e["gflops"] * 1e3, 2),
               "test loss": round(e["test_loss"], 4),
               "test loss 95% CI": (f"[{e['test_loss_ci'][0]:.4f}, {e['test_loss_ci'][1]:.4f}]" if e["test_loss_ci"]
                                   else f"seed sd {e['test_loss_seed_sd']:.4f}")}
        for scale in map(str, cfg.guidance):
            row[f"acc CFG {float(scale):g}"] = round(e[f"acc@{scale}"], 3)
            row[f"FD CFG {float(scale):g}"] = f"{e[f'fd@{scale}']:.1f} ± {e[f'fd_sd@{scale}']:.1f}"
        row["train s"] = round(e["train_s"])
        rows.append(row)
    summary = {"paper": PAPER, "claims": claims_table.rows(claims), "table": rows,
               **{k: v for k, v in f.items() if k != "arms"},
               "arms": [{k: v for k, v in a.items() if k not in ("grids", "test_items")} for a in f["arms"]]}
    ctx.write_summary(summary)
    steps = sorted({p["step"] for a in f["arms"] for p in a["curve"]})
    curve = [{"step": s, **{a["arm"] + (f" s{a['seed']}" if cfg.seeds > 1 else ""): p["eval_loss"]
                            for a in f["arms"] for p in a["curve"] if p["step"] == s}} for s in steps]
    keys = [k for k in curve[0] if k != "step"] if curve else []
    plots.curves(curve, keys, ctx.path("dev_loss.png"), "dev diffusion loss during training (same noise and t for every arm)")
    plots.bars({n: {f"CFG {float(s):g}": e[f"acc@{s}"] for s in map(str, cfg.guidance)} for n, e in f["by_arm"].items()},
               ctx.path("accuracy.png"), "classifier accuracy on samples", "accuracy")
    plots.bars({n: {f"CFG {float(s):g}": e[f"fd@{s}"] for s in map(str, cfg.guidance)} for n, e in f["by_arm"].items()},
               ctx.path("fd.png"), f"Fréchet distance in the classifier's features (floor {f['fd_floor']['fd']:.1f})", "FD")
    first = {a["arm"]: a for a in reversed(f["arms"])}
    plots.image_grids({f"{n} CFG {float(s):g}": a["grids"][s] for n, a in first.items() for s in (g1, gmax)},
                      ctx.path("samples.png"), "samples: one row per class (0-9), same starting noise in every panel",
                      [str(c) for c in range(10)])
    z = f["zero_init"]
    report = [
        f"# lab reproduce dit ({PAPER})\n\n",
        claims_table.markdown(claims, scale_gap(cfg)),
        "\n## Arms\n\n", markdown_table(rows),
        f"\nData: {f['data']}. Classifier (SmallCNN, trained here): test accuracy "
        f"{f['classifier_test_accuracy']:.3f}. FD floor (real test images vs the training set, "
        f"{f['fd_floor']['images']} images): {f['fd_floor']['fd']:.1f} ± {f['fd_floor']['sd']:.1f}. MFLOPs count one "
        "multiply-add as one, as the paper's Gflops do.\n",
        f"\nZero initialisation: our adaLN-Zero DiT's max |output| at init = {z['ours_max_abs']:.3g}; diffusers' "
        f"DiTTransformer2DModel at the same shape (patch {z['patch']}) = {z['diffusers_max_abs']:.3g}.\n",
        "\n![samples](samples.png)\n\n![dev loss](dev_loss.png)\n\n![accuracy](accuracy.png)\n![FD](fd.png)\n",
    ]
    ctx.write_report("".join(report))
    print_table(rows, title="lab reproduce dit: arms")
    claims_table.print_claims(claims, f"lab reproduce dit: {PAPER}")
    gmax = str(max(cfg.guidance))
    print("test loss: " + ", ".join(f"{n} {e['test_loss']:.4f}" for n, e in f["by_arm"].items())
          + f"; sample accuracy CFG 1 -> {float(gmax):g}: " + ", ".join(
              f"{n} {100 * e['acc@1.0']:.0f} -> {100 * e[f'acc@{gmax}']:.0f} %" for n, e in f["by_arm"].items())
          + f"; {sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold")
