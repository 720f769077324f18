"""`lab reproduce induction-heads`: Olsson et al. 2022, "In-context learning and induction heads",
at toy scale.

A 2-layer attention-only transformer (labcli.models.attn_only, TransformerLens hook points) trains on
the engine on random token segments followed by their repeat (labcli.data.repeated_tokens). Then
`labcli.interp` measures what the paper describes: the loss on the repeat drops in a phase change;
per-head previous-token and induction scores; zero-ablating the top induction head; activation
patching between clean and corrupted runs (TransformerLens' patching module); a logit lens per
layer; and the same patterns and ablation through nnsight, to check that two ways of hooking agree.

`--run DIR` points the same tools at a finished run's model instead (e.g. a `lab finetune tiny-lm`
run): head scores and ablation on repeated random tokens of its vocabulary, and a logit lens on text.
"""

from __future__ import annotations

import math

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.engine.trainer import TrainConfig
from labcli.runs import Run

PAPER = "Olsson et al. 2022"


class ModelSection(Section):
    n_layers: int = Field(2, ge=1, description="Attention-only layers (induction needs two)")
    n_heads: int = Field(4, ge=1, description="Heads per layer")
    d_model: int = Field(64, ge=8, description="Residual stream width")
    d_head: int = Field(16, ge=4, description="Width of one head")


class Config(RecipeConfig):
    run: str = Field("", description="Analyse this finished run's model instead of training (a folder with model/)")
    vocab: int = Field(64, ge=8, description="Token ids (0 is BOS); the loss to beat on the repeat is ln(vocab)")
    min_len: int = Field(6, ge=3, description="Shortest random segment (it is repeated once)")
    max_len: int = Field(16, ge=3, description="Longest random segment; sequences are 1 + 2 * max_len tokens")
    model: ModelSection = ModelSection()
    eval_sequences: int = Field(256, ge=8, description="Held-out sequences for every measurement")
    lens_texts: int = Field(64, ge=1, description="With run=DIR: lines of the shipped corpus for the logit lens on text")
    train: TrainConfig = TrainConfig(max_steps=2000, batch_size=32, micro_batch_size=32, lr=3e-3, weight_decay=0.01,
                                     warmup_steps=50, eval_every=100, eval_batches=8)


def check(cfg: Config) -> list[str]:
    problems = []
    if cfg.min_len > cfg.max_len:
        problems.append(f"min_len={cfg.min_len} is above max_len={cfg.max_len} (hint: set min_len <= max_len)")
    if cfg.run:
        from labcli.errors import UserError
        from labcli.interp.models import model_folder

        try:
            model_folder(cfg.run)
        except UserError as exc:
            problems.append(f"{exc.what} (hint: {exc.hint})")
    return problems


def run(cfg: Config, ctx: Run) -> None:
    from labcli.errors import UserError

    if problems := check(cfg):
        raise UserError(problems[0])  # already "WHAT (hint: FIX)", as `lab check` prints it
    if cfg.run:
        analyse_run(cfg, ctx)
    else:
        reproduce(cfg, ctx)


# ----------------------------------------------------------------------------- the reproduction


def reproduce(cfg: Config, ctx: Run) -> None:
    import torch

    from labcli import runs
    from labcli.data.repeated_tokens import RepeatedTokens, collate, copy_masks
    from labcli.engine.trainer import train
    from labcli.interp import heads
    from labcli.models.attn_only import AttnOnlyConfig, AttnOnlyTransformer

    runs.seed_everything(cfg.seed)
    n_ctx = 1 + 2 * cfg.max_len
    model = AttnOnlyTransformer(AttnOnlyConfig(d_vocab=cfg.vocab, n_ctx=n_ctx, **cfg.model.model_dump()))
    train_set = RepeatedTokens(cfg.train.max_steps * cfg.train.batch_size, cfg.min_len, cfg.max_len, cfg.vocab, cfg.seed)
    held_out = RepeatedTokens(cfg.eval_sequences, cfg.min_len, cfg.max_len, cfg.vocab, cfg.seed + 7919)
    probe = held_out.batch()
    first, second = copy_masks(probe)

    def loss_fn(model, batch):
        return model(batch["input_ids"], return_type="loss")

    @torch.no_grad()
    def on_eval(model, step: int) -> dict:
        was = model.training
        model.eval()
        tokens = probe["input_ids"]
        halves = heads.half_losses(heads.per_position_loss(model(tokens), tokens), first, second)
        patterns = heads.attention_patterns(model, tokens)
        model.train(was)
        return {**halves, "induction_score_max": heads.induction_scores(patterns, tokens).max().item(),
                "prev_token_score_max": heads.previous_token_scores(patterns).max().item()}

    result = train(model, train_set, collate, cfg.train, ctx, seed=cfg.seed, eval_set=held_out, loss_fn=loss_fn,
                   on_eval=on_eval)
    model = result.model.cpu().eval()  # the analysis is a few forward passes: on the CPU, with the probe data
    if not ctx.is_main:
        return
    found = analyse(model, cfg, probe, first, second)
    curve = [r for r in ctx.metrics() if "second_half_loss" in r]
    found["phase_change"] = phase_change(curve, cfg.train.max_steps)
    found.update(steps=result.steps, tokens=result.tokens, wall_s=round(result.wall_s, 1), ln_vocab=math.log(cfg.vocab))
    claims = claims_for(cfg, found)
    write_results(cfg, ctx, found, claims, curve)


def analyse(model, cfg: Config, probe: dict, first, second) -> dict:
    """Every measurement on the trained model, on held-out sequences."""
    from labcli.data.repeated_tokens import RepeatedTokens, corrupt
    from labcli.interp import crosscheck, heads, lens, patching

    tokens = probe["input_ids"]
    patterns = heads.attention_patterns(model, tokens)
    induction, previous = heads.induction_scores(patterns, tokens), heads.previous_token_scores(patterns)
    (top_layer, top_head), = heads.top_heads(induction)
    prev_top, = heads.top_heads(previous)
    inductive = [(layer, head) for layer, head in heads.top_heads(induction, induction.numel())
                 if induction[layer, head] > 0.5]
    ablate_top = heads.ablation(model, tokens, [(top_layer, top_head)], first, second)
    ablate_all = heads.ablation(model, tokens, inductive, first, second) if inductive else None
    # Patching on segments of one length and one corrupted position, so positions line up across the batch.
    aligned = RepeatedTokens(cfg.eval_sequences, cfg.max_len, cfg.max_len, cfg.vocab, cfg.seed + 104729).batch()
    bad = corrupt(aligned, cfg.vocab, seed=cfg.seed, position=cfg.max_len // 2)
    metric = patching.logit_diff(bad["query"], bad["answer"], bad["wrong"])
    patched = patching.patch(model, aligned["input_ids"], bad["input_ids"], metric)
    lens_rows = []
    for row_first, row_second in zip(lens.lens_table(model, tokens, first), lens.lens_table(model, tokens, second)):
        lens_rows.append({"layer": row_first["layer"], "first_half_loss": row_first["loss"],
                          "second_half_loss": row_second["loss"], "second_half_top1": row_second["top1"],
                          "in_context_gain": row_first["loss"] - row_second["loss"]})
    return {
        "induction_scores": induction.tolist(), "prev_token_scores": previous.tolist(),
        "top_induction_head": [top_layer, top_head], "top_induction_score": induction[top_layer, top_head].item(),
        "top_prev_token_head": list(prev_top), "top_prev_token_score": previous[prev_top].item(),
        "induction_heads": [list(h) for h in inductive],
        "losses": ablate_top["clean"], "ablate_top": ablate_top, "ablate_induction_heads": ablate_all,
        "patching": {"corrupted_position": cfg.max_len // 2, "clean_logit_diff": patched["clean"],
                     "corrupted_logit_diff": patched["corrupted"], "heads": patched["heads"].tolist(),
                     "resid_pre": patched["resid_pre"].tolist(),
                     "top_head_restored": patched["heads"][top_layer, top_head].item(),
                     "induction_heads_restored": (patching.patch_heads_together(
                         model, aligned["input_ids"], bad["input_ids"], inductive, metric) if inductive else None)},
        "logit_lens": lens_rows,
        "hooks_agree": crosscheck.agreement(model, tokens[:32], [(top_layer, top_head)]),
    }


def phase_change(curve: list[dict], max_steps: int) -> dict:
    """When the loss on the repeat fell: the steps where it had made 10 % and 90 % of its total drop,
    and when the best induction score first passed 0.5."""
    steps = [r["step"] for r in curve]
    values = [r["second_half_loss"] for r in curve]
    if len(values) < 2:
        return {"start_loss": None, "end_loss": None, "step_10pct": None, "step_90pct": None, "width_share": None,
                "induction_above_half_at": None}
    start, end = values[0], values[-1]

    def first_step(fraction: float) -> int | None:
        bound = start - fraction * (start - end)
        return next((s for s, v in zip(steps, values) if v <= bound), None)

    s10, s90 = first_step(0.1), first_step(0.9)
    induction_at = next((r["step"] for r in curve if r.get("induction_score_max", 0) > 0.5), None)
    width = (s90 - s10) / max_steps if s10 is not None and s90 is not None else None
    return {"start_loss": start, "end_loss": end, "step_10pct": s10, "step_90pct": s90, "width_share": width,
            "induction_above_half_at": induction_at}


def claims_for(cfg: Config, f: dict):
    from labcli.eval.claims import Claim, all_of, verdict

    ln_v = f["ln_vocab"]
    setting = (f"2-layer attn-only, d_model {cfg.model.d_model}, {cfg.model.n_heads} heads/layer; random segments "
               f"of {cfg.min_len}-{cfg.max_len} tokens (V={cfg.vocab}) repeated once; {f['steps']} steps, {f['tokens']:,} tokens")
    pc = f["phase_change"]
    drop_ok = pc["end_loss"] is not None and pc["start_loss"] - pc["end_loss"] > 0.5 * ln_v
    abrupt = verdict(pc["width_share"], 0.2, above=False, partly=0.4) if drop_ok else "does not hold"
    together = (pc["induction_above_half_at"] is not None and pc["step_10pct"] is not None
                and pc["step_10pct"] <= pc["induction_above_half_at"] <= pc["step_90pct"] + cfg.train.eval_every)
    phase_verdict = abrupt if together else ("partly" if abrupt == "holds" else abrupt)
    lens_rows = f["logit_lens"]
    final_gain, block0_gain = lens_rows[-1]["in_context_gain"], lens_rows[1]["in_context_gain"]
    lens_share = block0_gain / final_gain if final_gain > 0 else None
    a, p = f["ablate_top"], f["patching"]
    head = "L{}H{}".format(*f["top_induction_head"])
    prev_head = "L{}H{}".format(*f["top_prev_token_head"])
    every = f["ablate_induction_heads"]
    heads_named = ", ".join("L{}H{}".format(*h) for h in f["induction_heads"])
    return [
        Claim("loss on the repeat drops in a phase change, as induction heads form",
              f"{PAPER}: an abrupt drop early in training, coinciding with induction heads appearing",
              setting,
              (f"{pc['start_loss']:.2f} -> {pc['end_loss']:.3f} nats; 10-90 % of the drop between steps "
               f"{pc['step_10pct']} and {pc['step_90pct']} ({100 * (pc['width_share'] or 0):.0f} % of training); "
               f"induction score > 0.5 from step {pc['induction_above_half_at']}") if pc["start_loss"] is not None else "no curve",
              phase_verdict),
        Claim("an induction head forms (score > 0.5)", f"{PAPER}: heads attending to the token after the current "
              "token's earlier occurrence", setting, f"{head}: {f['top_induction_score']:.2f}",
              verdict(f["top_induction_score"], 0.5)),
        Claim("a previous-token head forms (score > 0.5)", f"{PAPER}: layer-0 heads attending to the previous token, "
              "composed with by the induction head", setting, f"{prev_head}: {f['top_prev_token_score']:.2f}",
              verdict(f["top_prev_token_score"], 0.5)),
        Claim("loss on the repeat < 10 % of ln V", "in-context copying makes the repeat nearly free", setting,
              f"{f['losses']['second_half_loss']:.3f} nats = {100 * f['losses']['second_half_loss'] / ln_v:.1f} % of ln V "
              f"({ln_v:.2f})", verdict(f["losses"]["second_half_loss"], 0.1 * ln_v, above=False)),
        Claim("ablating the top induction head removes >= 50 % of the in-context gain",
              f"{PAPER}: knocking out induction heads removes most in-context learning in small models", setting,
              f"{head} zeroed: gain {a['clean']['in_context_gain']:.2f} -> {a['ablated']['in_context_gain']:.2f} nats "
              f"({100 * a['gain_removed']:.0f} % removed)", verdict(a["gain_removed"], 0.5, above=True, partly=0.25)),
        Claim("ablating all the induction heads (score > 0.5) removes >= 50 % of the in-context gain",
              f"{PAPER}: knocking out induction heads removes most in-context learning in small models", setting,
              (f"{heads_named} zeroed: gain {a['clean']['in_context_gain']:.2f} -> "
               f"{every['ablated']['in_context_gain']:.2f} nats ({100 * every['gain_removed']:.0f} % removed)")
              if every else "no head scores > 0.5", verdict(every and every["gain_removed"], 0.5, partly=0.25)),
        Claim("patching the top induction head restores >= 80 % of the logit difference",
              "activation patching localises the behaviour in the induction head", setting,
              f"{head} clean->corrupted: {100 * p['top_head_restored']:.0f} % of {p['clean_logit_diff']:.2f} - "
              f"({p['corrupted_logit_diff']:.2f})", verdict(p["top_head_restored"], 0.8, partly=0.5)),
        Claim("patching all the induction heads together restores >= 80 % of the logit difference",
              "activation patching localises the behaviour in the induction heads", setting,
              f"{heads_named} clean->corrupted: {100 * p['induction_heads_restored']:.0f} %"
              if p["induction_heads_restored"] is not None else "no head scores > 0.5",
              verdict(p["induction_heads_restored"], 0.8, partly=0.5)),
        Claim("induction needs two layers: the residual after block 0 has (almost) no in-context gain",
              f"{PAPER}: one-layer attention-only models form no induction heads (K-composition across layers)",
              setting, (f"logit lens gain after block 0: {block0_gain:.2f} of {final_gain:.2f} nats "
                        f"({100 * (lens_share or 0):.0f} %)"), all_of(verdict(lens_share, 0.1, above=False))),
    ]


SCALE_GAP = ("Olsson et al. studied attention-only models of 1-6 layers (d_model 768, 12 heads per layer) on "
             "natural text for about 10B tokens, and larger models with MLPs; here one 2-layer toy model trains for "
             "minutes on random repeated segments, the setting where induction is the only way to lower the loss. "
             "The thresholds (0.5, 10 %, 50 %, 80 %) are this reproduction's, not numbers from the paper.")


def write_results(cfg: Config, ctx: Run, f: dict, claims, curve: list[dict]) -> None:
    from labcli.eval import claims as claims_table
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table

    summary = {"paper": PAPER, "claims": claims_table.rows(claims), **f}
    ctx.write_summary(summary)
    n_layers, n_heads = cfg.model.n_layers, cfg.model.n_heads
    head_ticks = [f"H{h}" for h in range(n_heads)]
    layer_ticks = [f"L{layer}" for layer in range(n_layers)]
    plots.curves(curve, ["first_half_loss", "second_half_loss"], ctx.path("phase_change.png"),
                 "loss on the first copy and on the repeat (held out)")
    plots.curves(curve, ["induction_score_max", "prev_token_score_max"], ctx.path("head_scores_over_training.png"),
                 "best head scores during training")
    plots.heatmaps({"previous-token score": f["prev_token_scores"], "induction score": f["induction_scores"]},
                   ctx.path("head_scores.png"), "per-head scores (held out)", "head", "layer", head_ticks, layer_ticks)
    p = f["patching"]
    plots.heatmaps({"head output patched (all positions)": p["heads"]}, ctx.path("patching_heads.png"),
                   "share of the logit difference restored", "head", "layer", head_ticks, layer_ticks)
    plots.heatmaps({"residual stream patched before each block": p["resid_pre"]}, ctx.path("patching_resid.png"),
                   f"share restored (segments of {cfg.max_len} tokens from position 1; corrupted token at "
                   f"{p['corrupted_position']}, query at {cfg.max_len + p['corrupted_position'] - 1})", "position", "block", None, layer_ticks)
    plots.bars({r["layer"]: {"first copy": r["first_half_loss"], "repeat": r["second_half_loss"]} for r in f["logit_lens"]},
               ctx.path("logit_lens.png"), "logit lens: next-token loss read out after each block", "nats")
    ablation_rows = [{"ablated": "none", **f["ablate_top"]["clean"]},
                     {"ablated": "L{}H{}".format(*f["top_induction_head"]), **f["ablate_top"]["ablated"],
                      "gain_removed": f["ablate_top"]["gain_removed"]}]
    if f["ablate_induction_heads"]:
        ablation_rows.append({"ablated": f"all {len(f['induction_heads'])} heads with induction score > 0.5",
                              **f["ablate_induction_heads"]["ablated"],
                              "gain_removed": f["ablate_induction_heads"]["gain_removed"]})
    agree = f["hooks_agree"]
    report = [
        f"# lab reproduce induction-heads ({PAPER})\n",
        claims_table.markdown(claims, SCALE_GAP),
        "\n## Head scores\n", markdown_table(
            [[f"L{layer}H{h}", f["prev_token_scores"][layer][h], f["induction_scores"][layer][h]]
             for layer in range(n_layers) for h in range(n_heads)], ["head", "previous-token score", "induction score"]),
        "\n![head scores](head_scores.png)\n\n## Phase change\n\n![phase change](phase_change.png)\n"
        "![head scores over training](head_scores_over_training.png)\n",
        "\n## Ablation (zeroing heads' outputs)\n", markdown_table(ablation_rows),
        f"\n## Activation patching\n\nClean logit difference {p['clean_logit_diff']:.2f}, corrupted "
        f"{p['corrupted_logit_diff']:.2f}; each cell is the share restored by patching that activation from the clean run. "
        + (f"Patching the {len(f['induction_heads'])} heads with induction score > 0.5 together restores "
           f"{100 * p['induction_heads_restored']:.0f} %.\n\n" if p["induction_heads_restored"] is not None else "\n\n")
        + "![heads](patching_heads.png)\n![residual](patching_resid.png)\n",
        "\n## Logit lens\n", markdown_table(f["logit_lens"]), "\n![logit lens](logit_lens.png)\n",
        "\n## Two ways of hooking\n\nTransformerLens hooks vs nnsight on the same model: attention patterns differ "
        f"by at most {agree['patterns_max_abs_diff']:.2e}, ablated logits by at most "
        f"{agree['ablated_logits_max_abs_diff']:.2e} (the ablation itself moves logits by up to "
        f"{agree['ablation_changes_logits']:.2f}).\n",
        f"\n{f['steps']} steps, {f['tokens']:,} tokens, {f['wall_s']} s of training.\n",
    ]
    ctx.write_report("".join(report))
    claims_table.print_claims(claims, f"lab reproduce induction-heads: {PAPER}")
    losses, every = f["losses"], f["ablate_induction_heads"]
    print(f"repeat loss {losses['second_half_loss']:.3f} nats ({100 * losses['second_half_loss'] / f['ln_vocab']:.1f} % of ln V); "
          f"top induction head L{f['top_induction_head'][0]}H{f['top_induction_head'][1]} {f['top_induction_score']:.2f}, "
          f"previous-token {f['top_prev_token_score']:.2f}; zeroing the {len(f['induction_heads'])} induction heads removes "
          f"{100 * every['gain_removed'] if every else 0:.0f} % of the gain; "
          f"{sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold ({f['steps']} steps, {f['wall_s']:.0f} s)")


# ----------------------------------------------------------------------------- any run's model


def analyse_run(cfg: Config, ctx: Run) -> None:
    """The interp tools on a finished run's causal LM: head scores, ablation and a logit lens."""
    import torch

    from labcli.data.repeated_tokens import RepeatedTokens, copy_masks
    from labcli.errors import UserError
    from labcli.eval import plots
    from labcli.eval.tables import markdown_table, print_table
    from labcli.interp import heads, lens
    from labcli.interp.models import load_run_model, model_folder
    from labcli.models.tokenizer import default_corpus

    model, tokenizer = load_run_model(cfg.run)
    n_ctx = 1 + 2 * cfg.max_len
    if n_ctx > model.cfg.n_ctx:
        raise UserError(f"sequences of {n_ctx} tokens exceed the model's context of {model.cfg.n_ctx}",
                        f"set max_len={(model.cfg.n_ctx - 1) // 2} or less")
    special = set(tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    probe = RepeatedTokens(cfg.eval_sequences, cfg.min_len, cfg.max_len, len(ordinary) + 1, cfg.seed + 7919).batch()
    ids = probe["input_ids"]
    tokens = torch.where(ids == 0, torch.tensor(start), ordinary[(ids - 1).clamp(min=0)])
    first, second = copy_masks(probe)
    with torch.no_grad():
        patterns = heads.attention_patterns(model, tokens)
    induction, previous = heads.induction_scores(patterns, tokens), heads.previous_token_scores(patterns)
    (top_layer, top_head), = heads.top_heads(induction)
    ablated = heads.ablation(model, tokens, [(top_layer, top_head)], first, second)
    lens_rows = [{"layer": a["layer"], "first_copy_loss": a["loss"], "repeat_loss": b["loss"], "repeat_top1": b["top1"]}
                 for a, b in zip(lens.lens_table(model, tokens, first), lens.lens_table(model, tokens, second))]
    texts = default_corpus()[:cfg.lens_texts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=model.cfg.n_ctx)
    text_rows = lens.lens_table(model, enc["input_ids"], enc["attention_mask"][:, 1:].bool())
    head_rows = [{"head": f"L{layer}H{h}", "previous-token score": previous[layer, h].item(),
                  "induction score": induction[layer, h].item()}
                 for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)]
    summary = {"run": str(cfg.run), "model": str(model_folder(cfg.run)), "head_scores": head_rows,
               "top_induction_head": [top_layer, top_head], "ablate_top": ablated,
               "logit_lens_repeated": lens_rows, "logit_lens_text": text_rows}
    ctx.write_summary(summary)
    plots.bars({r["layer"]: {"text": r["loss"]} for r in text_rows}, ctx.path("logit_lens_text.png"),
               "logit lens on the shipped corpus", "next-token loss (nats)")
    ctx.write_report(
        f"# Interpretability of {cfg.run}\n\n## Head scores (repeated random tokens of its vocabulary)\n"
        + markdown_table(head_rows)
        + f"\nZeroing L{top_layer}H{top_head} (top induction score) changes the in-context gain on the repeat from "
          f"{ablated['clean']['in_context_gain']:.3f} to {ablated['ablated']['in_context_gain']:.3f} nats.\n"
        + "\n## Logit lens on repeated tokens\n" + markdown_table(lens_rows)
        + f"\n## Logit lens on text ({len(texts)} lines of the shipped corpus)\n" + markdown_table(text_rows)
        + "\n![logit lens](logit_lens_text.png)\n")
    print_table(text_rows, title=f"logit lens on text: {cfg.run}")
    print(f"top induction head L{top_layer}H{top_head}: score {induction[top_layer, top_head].item():.2f}; "
          f"top previous-token head score {previous.max().item():.2f}")
