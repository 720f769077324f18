"""`lab reproduce moe`: DeepSeekMoE (Dai et al. 2024) and DeepSeek-V2/V3's balancing and MLA, at toy scale.

A tiny decoder (labcli.models.moe.TinyLM, MLA attention) trains on the engine on the shipped English
text in five arms at equal active FFN parameters: a dense FFN; GShard-style top-2 of 8 experts
(aux loss); DeepSeekMoE fine-grained experts (m=2 by default: 2x more, 2x narrower) with one shared expert,
the rest routed (top-3 of 15), balanced by the aux loss, aux-loss-free (bias b_i += gamma * sign(mean load - load_i)
after each step, gamma 0.001, plus V3's sequence-wise loss alpha 1e-4), or not at all. Reported:
validation loss, MaxVio (max load / mean load - 1) per layer over training and on validation, expert
loads. MLA: the naive and weight-absorbed forms agree on the trained model, and its KV cache per
token per layer is computed for DeepSeek-V2's config (576 vs 32,768 values) and measured here.
"""

from __future__ import annotations

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.engine.trainer import TrainConfig
from labcli.runs import Run

PAPERS = "DeepSeekMoE (Dai et al. 2024); DeepSeek-V2, V3; Wang et al. 2024 (aux-loss-free balancing)"
ARMS = ["dense", "gshard-top2", "deepseekmoe-aux", "deepseekmoe-lossfree", "deepseekmoe-none"]


class ModelSection(Section):
    d_model: int = Field(64, ge=16)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    vocab_size: int = Field(1000, ge=200, description="BPE tokenizer trained here on the corpus")
    block_size: int = Field(64, ge=16, description="Tokens per block")
    experts: int = Field(8, ge=2, description="GShard arm's experts (each 2 * d_model wide, top-2)")
    granularity: int = Field(2, ge=1, description="m: DeepSeekMoE's experts are m x more and m x narrower")
    shared: int = Field(1, ge=0, description="Shared experts of the DeepSeekMoE arms (taken from the m*2 active)")


class Config(RecipeConfig):
    model: ModelSection = ModelSection()
    arms: list[str] = Field(ARMS, description=f"Arms to train, of: {', '.join(ARMS)}")
    aux_alpha: float = Field(0.01, ge=0, description="Expert-level balance loss weight of the aux arms")
    bias_gamma: float = Field(0.001, ge=0, description="Bias update speed of the aux-loss-free arm")
    seq_alpha: float = Field(1e-4, ge=0, description="V3's sequence-wise balance loss weight (aux-loss-free arm)")
    seeds: int = Field(2, ge=1, description="Training seeds per arm (seed, seed+1, ...): loss differences are judged "
                                            "against the spread between seeds")
    train: TrainConfig = TrainConfig(max_steps=250, batch_size=8, micro_batch_size=8, lr=3e-3, warmup_steps=20,
                                     eval_every=50, eval_batches=10)


def model_config(cfg: Config, arm: str, vocab: int):
    from labcli.models.moe import MLASettings, MoESettings, TinyLMConfig

    m = cfg.model
    mla = MLASettings(n_heads=m.n_heads, d_head=m.d_model // m.n_heads, d_latent=m.d_model // 2,
                      d_q_latent=3 * m.d_model // 4, d_rope=max(2, m.d_model // m.n_heads // 2))
    base = dict(vocab_size=vocab, d_model=m.d_model, n_layers=m.n_layers, n_ctx=m.block_size, attention="mla",
                n_heads=m.n_heads, mla=mla, dense_hidden=4 * m.d_model)
    if arm == "dense":
        return TinyLMConfig(**base, ffn="dense")
    if arm == "gshard-top2":
        return TinyLMConfig(**base, ffn="moe", moe=MoESettings(n_experts=m.experts, top_k=2, expert_hidden=2 * m.d_model,
                                                               balance="aux", aux_alpha=cfg.aux_alpha))
    g = m.granularity
    balance = {"deepseekmoe-aux": "aux", "deepseekmoe-lossfree": "aux_free", "deepseekmoe-none": "none"}[arm]
    return TinyLMConfig(**base, ffn="moe", moe=MoESettings(
        n_experts=m.experts * g - m.shared, top_k=2 * g - m.shared, expert_hidden=2 * m.d_model // g, n_shared=m.shared,
        balance=balance, aux_alpha=cfg.aux_alpha, bias_gamma=cfg.bias_gamma, seq_alpha=cfg.seq_alpha))


def check(cfg: Config) -> list[str]:
    bad = [a for a in cfg.arms if a not in ARMS]
    problems = [f"unknown arm(s) {', '.join(bad)} (hint: arms are {', '.join(ARMS)})"] if bad else []
    if 2 * cfg.model.d_model % cfg.model.granularity:
        problems.append(f"2 * d_model is not divisible by granularity={cfg.model.granularity} (hint: pick m dividing {2 * cfg.model.d_model})")
    if cfg.model.shared >= 2 * cfg.model.granularity:
        problems.append(f"shared={cfg.model.shared} leaves no routed expert (hint: shared < 2 * granularity)")
    return problems


class Balancer:
    """Engine callback: after each step, the aux-loss-free bias update and each layer's MaxVio of the step's batch."""

    def __init__(self, model):
        self.layers = model.moe_layers()
        self.history: list[list[float]] = []

    def after_step(self, i: int) -> None:
        from labcli.models.moe import max_violation

        self.history.append([max_violation(layer.load) for layer in self.layers])
        for layer in self.layers:
            layer.update_bias()
            layer.reset_load()


def run(cfg: Config, ctx: Run) -> None:
    import torch

    from labcli import runs
    from labcli.data.newari import read_all
    from labcli.data.text import collate_lm, lm_blocks
    from labcli.engine.trainer import evaluate, train
    from labcli.errors import UserError
    from labcli.models.moe import TinyLM
    from labcli.models.tokenizer import train_tokenizer

    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    runs.seed_everything(cfg.seed)
    english = sorted({r.en for r in read_all()})
    tokenizer = train_tokenizer(english, cfg.model.vocab_size)
    blocks = lm_blocks(english, tokenizer, cfg.model.block_size)
    n_val = len(blocks) // 10
    train_set, val_set = blocks[n_val:], blocks[:n_val]

    def loss_fn(model, batch):
        return model(batch["input_ids"], batch["labels"]) + model.aux_loss()

    def lm_loss(model, batch):
        return model(batch["input_ids"], batch["labels"])

    rows, curves, models = [], {}, {}
    for arm in cfg.arms:
        per_seed = []
        for k in range(cfg.seeds):
            seed = cfg.seed + k
            torch.manual_seed(seed)
            model = TinyLM(model_config(cfg, arm, len(tokenizer)))
            balancer = Balancer(model)
            name = arm if cfg.seeds == 1 else f"{arm}-seed{seed}"
            result = train(model, train_set, collate_lm, cfg.train, ctx.sub(name), seed=seed, eval_set=val_set,
                           loss_fn=loss_fn, callbacks=[balancer], progress=False)
            model = result.model.eval()
            device = next(model.parameters()).device
            val_loss = evaluate(model, val_set, collate_lm, cfg.train, device, lm_loss)
            val_load = validation_load(model, val_set)
            tail = balancer.history[-max(1, len(balancer.history) // 5):]
            per_seed.append({"val_loss": val_loss, "wall_s": result.wall_s, "val_load": val_load,
                             "maxvio_train": [sum(h[layer] for h in tail) / len(tail) for layer in range(len(val_load))]})
            if k == 0:
                curves[arm], models[arm] = balancer.history, (model, val_load)
            print(f"{name}: validation loss {val_loss:.4f}" + (f", MaxVio (val) {[round(v['maxvio'], 2) for v in val_load]}"
                                                               if val_load else "") + f" ({result.wall_s:.0f} s)", flush=True)
        rows.append(arm_row(arm, per_seed, model))
    curves = {arm: history for arm, history in curves.items() if history and history[0]}
    if not ctx.is_main:
        return
    mla = mla_checks(models, val_set)
    write_results(cfg, ctx, rows, curves, models, mla)


def arm_row(arm: str, per_seed: list[dict], model) -> dict:
    """One table row: mean over seeds (validation loss, MaxVio per layer), the seeds' losses and their range."""
    n = len(per_seed)
    losses = [r["val_loss"] for r in per_seed]
    row = {"arm": arm, "val_loss": round(sum(losses) / n, 4), "val_loss_range": round(max(losses) - min(losses), 4),
           "val_loss_seeds": [round(v, 4) for v in losses], "active_ffn_params": model.active_ffn_params(),
           "total_params": sum(p.numel() for p in model.parameters()), "wall_s": round(sum(r["wall_s"] for r in per_seed) / n, 1)}
    for layer in range(len(per_seed[0]["val_load"])):
        row[f"maxvio_train_L{layer}"] = round(sum(r["maxvio_train"][layer] for r in per_seed) / n, 3)
        row[f"maxvio_val_L{layer}"] = round(sum(r["val_load"][layer]["maxvio"] for r in per_seed) / n, 3)
    return row


def validation_load(model, val_set) -> list[dict]:
    """Per MoE layer: tokens per expert over the validation blocks, and MaxVio (no bias update)."""
    import torch

    from labcli.data.text import collate_lm
    from labcli.models.moe import max_violation

    layers = model.moe_layers()
    for layer in layers:
        layer.reset_load()
    model.train()  # loads accumulate in training mode; nothing is updated here
    device = next(model.parameters()).device
    with torch.no_grad():
        for lo in range(0, len(val_set), 32):
            model(collate_lm(val_set[lo:lo + 32])["input_ids"].to(device))
    model.eval()
    out = [{"load": layer.load.tolist(), "maxvio": max_violation(layer.load)} for layer in layers]
    for layer in layers:
        layer.reset_load()
    return out


def mla_checks(models: dict, val_set) -> dict:
    """Naive vs weight-absorbed MLA on a trained model's first layer, and the cache it holds per token."""
    import torch

    from labcli.models.moe import DEEPSEEK_V2, MHA, kv_cache_values

    model = next(iter(models.values()))[0]
    block = model.blocks[0]
    x = block.ln1(model.embed(val_set[0]["input_ids"][None].to(next(model.parameters()).device)))
    with torch.no_grad():
        naive = block.attn(x)
        half = x.shape[1] // 2
        a, cache = block.attn.decode(x[:, :half])
        b, cache = block.attn.decode(x[:, half:], cache)
    absorbed = torch.cat([a, b], 1)
    measured = sum(t.shape[-1] for t in cache)  # values cached per token in this layer
    mha = MHA(model.c.d_model, model.c.n_heads).cache_values_per_token()
    v2 = kv_cache_values(DEEPSEEK_V2.n_heads, DEEPSEEK_V2.d_head, DEEPSEEK_V2.d_latent, DEEPSEEK_V2.d_rope)
    return {"naive_vs_absorbed_max_abs_diff": (naive - absorbed).abs().max().item(),
            "tiny_cache_values_per_token_per_layer": measured, "tiny_mha_equivalent": mha,
            "tiny_cache_tokens": int(cache[0].shape[1]), "v2": v2}


def claims_for(cfg: Config, rows: list[dict], mla: dict):
    from labcli.eval.claims import Claim, all_of, verdict

    by = {r["arm"]: r for r in rows}
    n = cfg.model.n_layers
    setting = (f"MLA decoder, d {cfg.model.d_model}, {n} layers, {cfg.train.max_steps} steps x {cfg.train.batch_size} "
               f"blocks of {cfg.model.block_size} tokens, shipped English text; equal active FFN parameters; "
               f"mean of {cfg.seeds} seed{'s' if cfg.seeds > 1 else ''}")
    # seed noise: the largest range of validation loss across seeds among the arms (None with one seed)
    noise = max(r["val_loss_range"] for r in rows) if cfg.seeds > 1 else None
    noise_text = f"; seed range up to {noise:.4f}" if noise is not None else "; one seed, noise unmeasured"

    def beats(gain: float) -> str:
        """A loss gain holds when it exceeds the seed noise; within the noise it is only partly supported."""
        if gain <= 0:
            return "does not hold"
        return "holds" if noise is not None and gain > noise else "partly"

    def vio(arm: str, kind: str = "val") -> float | None:
        r = by.get(arm)
        return max(r[f"maxvio_{kind}_L{layer}"] for layer in range(n)) if r and f"maxvio_{kind}_L0" in r else None

    out = []
    if "gshard-top2" in by and "deepseekmoe-aux" in by:
        g, d = by["gshard-top2"]["val_loss"], by["deepseekmoe-aux"]["val_loss"]
        out.append(Claim("fine-grained + shared experts beat GShard top-2 at equal compute",
                         "DeepSeekMoE Table 1 (2B total, 100B tokens): Pile loss 1.808 vs GShard 1.867", setting,
                         f"val loss {d:.4f} vs {g:.4f} ({d - g:+.4f}{noise_text})", beats(g - d)))
    if "deepseekmoe-aux" in by and "deepseekmoe-lossfree" in by:
        va, vf = vio("deepseekmoe-aux"), vio("deepseekmoe-lossfree")
        la, lf = by["deepseekmoe-aux"]["val_loss"], by["deepseekmoe-lossfree"]["val_loss"]
        out.append(Claim("aux-loss-free balancing: MaxVio <= 0.5x the aux-loss arm's, loss within 0.02",
                         "Wang et al. 2024 (1B): MaxVio_global 0.04 vs 0.72, perplexity 9.50 vs 9.56; V3 adopts it", setting,
                         f"MaxVio (val, worst layer) {vf:.2f} vs {va:.2f}; val loss {lf:.4f} vs {la:.4f}{noise_text}",
                         all_of(verdict(vf / va if va else None, 0.5, above=False, partly=1.0), verdict(lf - la, 0.02, above=False))))
    if "deepseekmoe-none" in by and "deepseekmoe-aux" in by:
        vn, va = vio("deepseekmoe-none"), vio("deepseekmoe-aux")
        out.append(Claim("without balancing, routing collapses onto few experts",
                         "DeepSeekMoE section 3.3 / Shazeer et al. 2017: unbalanced routing collapses", setting,
                         f"MaxVio (val, worst layer) {vn:.2f} without balancing vs {va:.2f} with the aux loss",
                         all_of(verdict(vn, 1.0), verdict(vn / va if va else None, 2.0))))
    v2 = mla["v2"]
    out += [
        Claim("MLA caches 576 values per token per layer vs 32,768 for MHA (DeepSeek-V2 config)",
              "DeepSeek-V2 Table 1: (d_c + d_R) = 4.5 d_h vs 2 n_h d_h; n_h = d_h = 128, d_c = 512, d_R = 64",
              "computed from the V2 settings", f"{v2['mla']:,} vs {v2['mha']:,}",
              "holds" if (v2["mla"], v2["mha"]) == (576, 32768) else "does not hold"),
        Claim("naive and weight-absorbed MLA give the same outputs", "DeepSeek-V2 section 2.1.2: W_UK, W_UV absorbable",
              "the trained model's first MLA layer, prefix then continuation with the latent cache",
              f"max |diff| {mla['naive_vs_absorbed_max_abs_diff']:.1e}", verdict(mla["naive_vs_absorbed_max_abs_diff"], 1e-4, above=False)),
        Claim("the tiny model's MLA cache is smaller than MHA's", "DeepSeek-V2: 93.3 % smaller KV cache than DeepSeek 67B",
              f"d {cfg.model.d_model}, {cfg.model.n_heads} heads", f"measured {mla['tiny_cache_values_per_token_per_layer']} vs "
              f"{mla['tiny_mha_equivalent']} values per token per layer",
              verdict(mla["tiny_cache_values_per_token_per_layer"], mla["tiny_mha_equivalent"], above=False)),
    ]
    return out


SCALE_GAP = ("The papers train 2B-671B-parameter models on 100B-15T tokens; here each arm is a ~0.2M-parameter, "
             "2-layer decoder trained for minutes on about 10k short English sentences, with two seeds per arm by "
             "default: a loss difference smaller than the largest range between seeds is within noise (partly).")


def write_results(cfg: Config, ctx: Run, rows, curves, models, mla) -> None:
    from labcli.eval import claims as claims_table
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table

    claims = claims_for(cfg, rows, mla)
    loads = {arm: [v["load"] for v in val_load] for arm, (_, val_load) in models.items() if val_load}
    ctx.write_summary({"papers": PAPERS, "claims": claims_table.rows(claims), "arms": rows, "mla": mla,
                       "validation_loads": loads})
    records = []
    for arm, history in curves.items():
        for step, per_layer in enumerate(history, 1):
            records.append({"step": step, **{f"{arm} L{layer}": v for layer, v in enumerate(per_layer)}})
    keys = [f"{arm} L{layer}" for arm in curves for layer in range(cfg.model.n_layers)]
    plots.curves(records, keys, ctx.path("maxvio.png"), "MaxVio per layer and training step (batch load)")
    for arm, per_layer in loads.items():
        plots.bars({f"E{e}": {f"L{layer}": per_layer[layer][e] for layer in range(len(per_layer))}
                    for e in range(len(per_layer[0]))}, ctx.path(f"load_{arm}.png"),
                   f"{arm}: tokens per expert on validation", "tokens")
    images = "".join(f"![{arm}](load_{arm}.png)\n" for arm in loads)
    ctx.write_report(f"# lab reproduce moe\n\n{PAPERS}\n\n" + claims_table.markdown(claims, SCALE_GAP)
                     + "\n## Arms\n\n" + markdown_table(rows)
                     + "\nMaxVio_train is the mean over the last fifth of training of each step's batch MaxVio; "
                       f"MaxVio_val is over all validation tokens; both and val_loss are means over {cfg.seeds} seed(s), "
                       "val_loss_range is the largest minus the smallest seed's loss. Plots show the first seed.\n\n![MaxVio](maxvio.png)\n\n## Expert loads\n\n" + images)
    claims_table.print_claims(claims, "lab reproduce moe: DeepSeekMoE, DeepSeek-V2/V3")
    print("validation loss (mean of {} seed{}): ".format(cfg.seeds, "s" if cfg.seeds > 1 else "")
          + ", ".join(f"{r['arm']} {r['val_loss']:.4f}" for r in rows)
          + (f"; largest seed range {max(r['val_loss_range'] for r in rows):.4f}" if cfg.seeds > 1 else "")
          + f"; {sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold")
