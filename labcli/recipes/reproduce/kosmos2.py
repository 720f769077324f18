"""`lab reproduce kosmos2`: Kosmos-2's grounding through location tokens (Peng et al. 2023), at CPU scale.

Exact checks: boxes -> `<patch_index_XXXX>` pairs on the 32 x 32 grid -> boxes (labcli/models/
location_tokens.py) within one cell, the same entities and boxes as transformers' own Kosmos-2
post-processing on crafted strings, and a forward pass of a tiny `Kosmos2ForConditionalGeneration`
built from its config. The claim at small scale: a small vision-language model trained here on
synthetic scenes (labcli/models/grounding_vlm.py) names the box of "the small red circle" (attributes)
or "the small red circle left of the blue square" (a relation: the only way to tell two identical
objects apart) by its two location cells, at IoU >= 0.5 on held-out scenes and on held-out (colour,
shape) combinations, against the same model without the image (language only).

Splits: train, dev and test scenes come from three separate seed streams. Settings are chosen on the
dev sets only; the test sets are reported and never looked at to choose anything.

`model=PATH` (a save_pretrained folder or a cached hub id of a Kosmos-2 checkpoint with its
processor) asks that model the same test questions instead of training (labcli/models/
kosmos2_grounding.py): prompt `<grounding><phrase> EXPRESSION</phrase>`, greedy generation, boxes
from the processor's post-processing, IoU >= 0.5.
"""

from __future__ import annotations

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.runs import Run

PAPER = "Kosmos-2: Grounding Multimodal Large Language Models to the World (Peng et al. 2023)"
HELD_OUT = [("red", "circle"), ("blue", "square"), ("yellow", "triangle")]
TESTS = ["held-out scenes", "held-out combinations"]


class Config(RecipeConfig):
    train_scenes: int = Field(5000, ge=10, description="Generated training scenes")
    dev_scenes: int = Field(300, ge=1, description="Scenes per dev set (where settings are chosen)")
    test_scenes: int = Field(300, ge=1, description="Scenes per test set (only reported; drawn from their own seed stream)")
    objects: int = Field(3, ge=1, le=5, description="Shapes per scene")
    relation_share: float = Field(0.5, ge=0, le=1, description="Share of expressions that need a relation to another "
                                  "object (two identical objects on opposite sides of a third)")
    width: int = Field(64, ge=8, description="Width of the grounding model")
    layers: int = Field(2, ge=1, description="Transformer layers of the grounding model")
    train: TrainConfig = TrainConfig(max_steps=6000, batch_size=32, micro_batch_size=32, lr=2e-3, warmup_steps=50,
                                     eval_batches=2, eval_every=500)
    report_test: bool = Field(True, description="false: score the dev sets only, never drawing the test sets (for "
                              "choosing settings)")
    model: str = Field("", description="A Kosmos-2 checkpoint with its processor (save_pretrained folder or cached hub "
                       "id, e.g. microsoft/kosmos-2-patch14-224): evaluate it on the test sets instead of training")
    iou_bar: float = Field(0.5, description="A box counts as right at IoU >= this")
    accuracy_bar: float = Field(0.8, description="The issue's bar for grounding accuracy")


def check(cfg: Config) -> list[str]:
    problems = []
    if cfg.width % 4:
        problems.append(f"width={cfg.width} is not a multiple of 4 attention heads (hint: use a multiple of 4)")
    if cfg.relation_share > 0 and cfg.objects < 3:
        problems.append(f"relation_share={cfg.relation_share:g} needs objects >= 3 (target, its twin, the anchor), got "
                        f"objects={cfg.objects} (hint: set objects=3 or relation_share=0)")
    if cfg.model:
        from labcli.models.kosmos2_grounding import check_model

        problems += check_model(cfg.model)
    return problems


def plan(cfg: Config) -> str:
    kinds = f"{cfg.relation_share:.0%} of expressions need a relation"
    if cfg.model:
        return (f"exact location-token checks; then no training: the Kosmos-2 checkpoint {cfg.model} "
                f"(Kosmos2ForConditionalGeneration + AutoProcessor) answers '<grounding><phrase> EXPRESSION</phrase>' "
                f"by greedy generation for {cfg.test_scenes} held-out scenes and {cfg.test_scenes} with held-out "
                f"colour-shape combinations ({kinds}); boxes from the processor's post_process_generation, right at "
                f"IoU >= {cfg.iou_bar:g}")
    tests = (f"test sets of {cfg.test_scenes} held-out scenes and {cfg.test_scenes} with held-out colour-shape "
             "combinations, each from its own seed stream" if cfg.report_test else "no test sets (report_test=false)")
    return (f"exact location-token checks; train a {cfg.layers}x{cfg.width} grounding model with and without the image "
            f"on {cfg.train_scenes} scenes ({cfg.train.max_steps} steps each; {kinds}); dev sets of {cfg.dev_scenes} "
            f"scenes; {tests}")


CRAFTED = [
    "<grounding> An image of<phrase> a snowman</phrase><object><patch_index_0044><patch_index_0863></object> warming "
    "himself by<phrase> a fire</phrase><object><patch_index_0005><patch_index_0911></object>.",
    "<grounding><phrase> the small red circle</phrase><object><patch_index_0100><patch_index_0100></object> left of"
    "<phrase> the blue square </phrase><object><patch_index_0040><patch_index_0360></object>",
    "  two<phrase> dogs</phrase><object><patch_index_0001><patch_index_0130></delimiter_of_multi_objects/>"
    "<patch_index_0500><patch_index_0990></object> and<object><patch_index_0031><patch_index_0063></object> x",
    "<phrase>a row</phrase><object><patch_index_0064><patch_index_0095></object>",
    "no tags at all",
]


def exact_checks(seed: int) -> dict:
    import random

    import torch
    from transformers import Kosmos2Config, Kosmos2ForConditionalGeneration
    from transformers.models.kosmos2.processing_kosmos2 import clean_text_and_extract_entities_with_bboxes

    from labcli.models import location_tokens as lt

    rng, worst, n = random.Random(seed), 0.0, 0
    while n < 20000:
        x1, x2 = sorted(rng.random() for _ in range(2))
        y1, y2 = sorted(rng.random() for _ in range(2))
        if x2 <= x1 or y2 <= y1:
            continue
        back = lt.indices_to_box(*lt.box_to_indices((x1, y1, x2, y2)))
        worst, n = max(worst, *(abs(a - b) for a, b in zip((x1, y1, x2, y2), back))), n + 1
    agree = sum(lt.entities(t) == clean_text_and_extract_entities_with_bboxes(t) for t in CRAFTED)
    torch.manual_seed(seed)
    config = Kosmos2Config(
        text_config={"vocab_size": 1100, "embed_dim": 32, "layers": 2, "attention_heads": 2, "ffn_dim": 64, "max_position_embeddings": 128},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        latent_query_num=8)
    model = Kosmos2ForConditionalGeneration(config).eval()
    ids = torch.randint(4, 1100, (2, 20))
    mask = torch.zeros(2, 20, dtype=torch.long)
    mask[:, 1:9] = 1  # where the 8 latent image tokens go
    with torch.no_grad():
        out = model(pixel_values=torch.rand(2, 3, 32, 32), input_ids=ids, attention_mask=torch.ones_like(ids),
                    image_embeds_position_mask=mask)
    return {"boxes_round_tripped": n, "round_trip_max_error": worst, "crafted_strings": len(CRAFTED),
            "crafted_agree": agree, "tiny_kosmos2_logits": list(out.logits.shape),
            "tiny_kosmos2_params": sum(p.numel() for p in model.parameters()),
            "tiny_kosmos2_finite": bool(torch.isfinite(out.logits).all())}


def seen_combos() -> list[tuple[str, str]]:
    from labcli.models import grounding_vlm as g

    return [(c, s) for c in g.COLOURS for s in g.SHAPES if (c, s) not in HELD_OUT]


def draw(split: str, seed: int, n: int, cfg: Config, allowed) -> list:
    """n scenes from the seed stream of `split` (train, dev, test), round(n * relation_share) of them
    relation scenes. Anchors are always seen combinations: a held-out one is never named in training."""
    import random

    from labcli.models import grounding_vlm as g

    rng = random.Random(f"kosmos2-{split}-{seed}")
    relations = round(n * cfg.relation_share)
    return [g.make_scene(rng, cfg.objects, allowed, relation=i < relations, anchors=seen_combos()) for i in range(n)]


def eval_sets(cfg: Config, split: str, n: int) -> dict:
    """{(split, test): scenes} for the two held-out sets of one split."""
    return {(split, "held-out scenes"): draw(f"{split}-scenes", cfg.seed, n, cfg, seen_combos()),
            (split, "held-out combinations"): draw(f"{split}-combinations", cfg.seed, n, cfg, HELD_OUT)}


class Scenes:
    """A scene list as examples for the engine: image tensor, word ids, target cells."""

    def __init__(self, scenes):
        import numpy as np
        import torch

        from labcli.models import grounding_vlm as g

        self.images = torch.tensor(np.stack([s.image for s in scenes]))
        self.words = g.encode_text([s.expression for s in scenes])
        self.targets = g.targets([s.box for s in scenes])
        self.boxes = [s.box for s in scenes]
        self.kinds = [s.kind for s in scenes]
        self.expressions = [s.expression for s in scenes]

    def __len__(self):
        return len(self.boxes)

    def __getitem__(self, i):
        return {"images": self.images[i], "words": self.words[i], "targets": self.targets[i]}


def loss_fn(model, batch):
    import torch.nn.functional as F

    logits = model(batch["images"], batch["words"])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))


def score(boxes: list, data: Scenes, bar: float) -> dict:
    """Accuracy at IoU >= bar, overall and per expression kind (None where a kind has no scenes); a
    missing box (None) is a miss."""
    import numpy as np

    from labcli.models import grounding_vlm as g

    ious = np.array([g.iou(a, b) if a is not None else 0.0 for a, b in zip(boxes, data.boxes)])
    kinds = np.array(data.kinds)
    per_kind = {k: (float((ious[kinds == k] >= bar).mean()) if (kinds == k).any() else None) for k in g.KINDS}
    return {"accuracy": float((ious >= bar).mean()), **per_kind, "mean_iou": float(ious.mean()), "n": len(data)}


def small_model_boxes(model, data: Scenes) -> list:
    from labcli.models import grounding_vlm as g

    model.eval()
    device = next(model.parameters()).device
    boxes = []
    for lo in range(0, len(data), 256):
        boxes += g.predict_boxes(model, data.images[lo:lo + 256].to(device), data.words[lo:lo + 256].to(device))
    return boxes


def dev_accuracy(model, sets: dict, bar: float) -> dict:
    """During training: accuracy on the dev sets (where settings are chosen), never on the test sets."""
    was_training = model.training
    out = {}
    for (split, test), data in sets.items():
        if split == "dev":
            got = score(small_model_boxes(model, data), data, bar)
            out[f"dev {test.removeprefix('held-out ')}"] = got["accuracy"]
    model.train(was_training)
    return out


def train_and_score(cfg: Config, ctx: Run, device) -> list[dict]:
    """The small grounding model with and without the image, scored on the dev and test sets."""
    import torch

    from labcli.engine.trainer import train
    from labcli.models import grounding_vlm as g

    train_set = Scenes(draw("train", cfg.seed, cfg.train_scenes, cfg, seen_combos()))
    drawn = {**eval_sets(cfg, "dev", cfg.dev_scenes), **(eval_sets(cfg, "test", cfg.test_scenes) if cfg.report_test else {})}
    sets = {k: Scenes(v) for k, v in drawn.items()}
    rows = []
    for name, use_image in (("vision + language", True), ("language only", False)):
        torch.manual_seed(cfg.seed)
        model = g.GroundingModel(cfg.width, cfg.layers, 4, use_image)
        used = sum(p.numel() for n, p in model.named_parameters() if use_image or not n.startswith(("cnn.", "image_pos")))
        print(f"training {name} ({used:,} parameters used) on {len(train_set)} scenes", flush=True)
        result = train(model, train_set, _collate, cfg.train, ctx.sub(name.replace(" + ", "-").replace(" ", "-")), seed=cfg.seed,
                       device=device, loss_fn=loss_fn, progress=False, eval_set=sets[("dev", "held-out scenes")],
                       on_eval=lambda m, i: dev_accuracy(m, sets, cfg.iou_bar))
        model = result.model.cpu()
        for (split, test), data in sets.items():
            rows.append({"model": name, "split": split, "test": test, **score(small_model_boxes(model, data), data, cfg.iou_bar),
                         "train_s": round(result.wall_s, 1)})
            print(f"{name}, {split} {test}: accuracy {rows[-1]['accuracy']:.3f}", flush=True)
    return rows


def kosmos2_rows(cfg: Config, device) -> list[dict]:
    """A Kosmos-2 checkpoint on the test sets, the same questions and scoring."""
    from labcli.models import kosmos2_grounding as k

    model, processor = k.load(cfg.model, device)
    rows = []
    for (split, test), scenes in eval_sets(cfg, "test", cfg.test_scenes).items():
        data = Scenes(scenes)
        boxes = k.ground(model, processor, data.images.numpy(), data.expressions)
        rows.append({"model": f"Kosmos-2 ({cfg.model})", "split": split, "test": test, **score(boxes, data, cfg.iou_bar),
                     "answered": sum(b is not None for b in boxes)})
        print(f"Kosmos-2, {split} {test}: accuracy {rows[-1]['accuracy']:.3f} ({rows[-1]['answered']}/{len(data)} "
              "answers with a box)", flush=True)
    return rows


def run(cfg: Config, ctx: Run) -> None:
    from labcli import runs
    from labcli.engine.distributed import pick_device
    from labcli.errors import UserError

    if problems := check(cfg):
        raise UserError(problems[0])
    runs.seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    exact = exact_checks(cfg.seed)
    print(f"exact: round trip max error {exact['round_trip_max_error']:.4f} (< 1/32), {exact['crafted_agree']}/"
          f"{exact['crafted_strings']} crafted strings agree with transformers, tiny Kosmos-2 logits {exact['tiny_kosmos2_logits']}",
          flush=True)
    rows = kosmos2_rows(cfg, device) if cfg.model else train_and_score(cfg, ctx, device)
    if ctx.is_main:
        write_results(cfg, ctx, exact, rows, device)


def _collate(items):
    import torch

    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def claims_for(cfg: Config, exact: dict, rows: list[dict]):
    from labcli.eval.claims import Claim, all_of, verdict

    test = {(r["model"], r["test"]): r for r in rows if r.get("split", "test") == "test"}
    setting = (f"{cfg.test_scenes} test scenes per set ({cfg.relation_share:.0%} relation expressions), from a seed "
               f"stream no choice has seen; held-out combinations {', '.join(' '.join(h) for h in HELD_OUT)}")
    claims = [
        Claim("a box is two location tokens on a 32x32 grid; decoding moves a coordinate by less than one cell",
              "section 2.1: 32x32 bins, 1024 location tokens, upper-left and lower-right cells",
              f"{exact['boxes_round_tripped']:,} random boxes", f"max error {exact['round_trip_max_error']:.4f} (1/32 = 0.03125)",
              verdict(exact["round_trip_max_error"], 1 / 32, above=False)),
        Claim("lab's encoding and decoding equal Kosmos-2's own", "transformers' Kosmos-2 processor post-processing "
              "(clean_text_and_extract_entities_with_bboxes)", f"{exact['crafted_strings']} crafted strings (phrases, "
              "multiple boxes, an object without a phrase, spaces, no tags)", f"{exact['crafted_agree']}/{exact['crafted_strings']} "
              f"identical; a tiny Kosmos2ForConditionalGeneration ({exact['tiny_kosmos2_params']:,} parameters) gives "
              f"logits {exact['tiny_kosmos2_logits']}", "holds" if exact["crafted_agree"] == exact["crafted_strings"]
              and exact["tiny_kosmos2_finite"] else "does not hold"),
    ]
    paper = ("Tables 2-3, zero-shot: Flickr30k Entities R@1 78.7 (phrase grounding), RefCOCO testA 57.4; the issue's "
             f"bar >= {cfg.accuracy_bar:g} on held-out scenes and combinations")
    if cfg.model:
        name = f"Kosmos-2 ({cfg.model})"
        got = [test[(name, t)] for t in TESTS]
        claims.append(Claim(f"the Kosmos-2 checkpoint grounds the synthetic expressions zero-shot at IoU >= {cfg.iou_bar:g}",
                            paper, setting, " / ".join(f"{r['accuracy']:.3f} (attributes {_fmt(r['attributes'])}, relation "
                                                       f"{_fmt(r['relation'])})" for r in got),
                            all_of(*(verdict(r["accuracy"], cfg.accuracy_bar - 1e-9) for r in got))))
        return claims
    if not cfg.report_test:
        return claims  # dev only: nothing to claim
    small = f"; {cfg.layers}x{cfg.width} model, {cfg.train_scenes} training scenes, {cfg.train.max_steps} steps"
    for kind, what in (("attributes", "named by its attributes (the small red circle)"),
                       ("relation", "told from an identical twin by a relation (... left of the blue square)")):
        vl = [test[("vision + language", t)][kind] for t in TESTS]
        lo = [test[("language only", t)][kind] for t in TESTS]
        if any(v is None for v in vl + lo):
            continue  # no scenes of this kind (relation_share 0 or 1)
        claims.append(Claim(f"grounding an object {what} at IoU >= {cfg.iou_bar:g}, also for unseen attribute combinations",
                            paper + ", above a language-only baseline", setting + small,
                            f"{vl[0]:.3f} / {vl[1]:.3f} with the image vs {lo[0]:.3f} / {lo[1]:.3f} language only",
                            all_of(*(verdict(v, cfg.accuracy_bar - 1e-9, partly=max(lo)) for v in vl))))
    return claims


def scale_gap(cfg: Config) -> str:
    if cfg.model:
        return (f"{cfg.model} is asked about 32x32 synthetic scenes scaled up to its input size, far from the "
                "photographs it was trained on; greedy generation, the first box of the first phrase. One seed.")
    return ("Kosmos-2 is a 1.6B-parameter multimodal LM trained on GRIT (91M image-text pairs with 115M grounded "
            f"boxes) that writes location tokens autoregressively; here a {cfg.layers}x{cfg.width} encoder over 8x8 CNN "
            "features of 32x32 synthetic scenes with four classification heads (the rows and columns of the two "
            "location cells, the 1024 tokens factorised), trained from scratch on two kinds of expression (size colour "
            "shape; the same plus one of four relations to an anchor object). The tiny Kosmos-2 is random weights: it "
            "checks the architecture runs, not what it knows. One seed.")


def write_results(cfg: Config, ctx: Run, exact: dict, rows: list[dict], device) -> None:
    from labcli.eval import claims as claims_table
    from labcli.eval import plots
    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import markdown_table

    claims = claims_for(cfg, exact, rows)
    groups = {f"{r['split']} {r['test']}\n{kind}": {} for r in rows for kind in ("attributes", "relation") if r[kind] is not None}
    for r in rows:
        for kind in ("attributes", "relation"):
            if r[kind] is not None:
                groups[f"{r['split']} {r['test']}\n{kind}"][r["model"]] = r[kind]
    plots.bars(groups, ctx.path("grounding.png"), f"accuracy at IoU >= {cfg.iou_bar:g} by expression kind", "accuracy")
    if not cfg.model:
        records = [{**m, "model": name} for name in ("vision-language", "language-only") for m in ctx.sub(name).metrics()]
        plots.curves([{"step": m["step"], f"{m['model']} {k}": m[k]} for m in records for k in ("loss", "eval_loss")
                      if m.get(k) is not None and "step" in m],
                     [f"{n} {k}" for n in ("vision-language", "language-only") for k in ("loss", "eval_loss")],
                     ctx.path("loss.png"), "training loss (eval_loss: dev held-out scenes)")
        dev = [m for m in ctx.sub("vision-language").metrics() if "dev scenes" in m]
        plots.curves(dev, ["dev scenes", "dev combinations"], ctx.path("dev_accuracy.png"),
                     f"vision + language: dev accuracy at IoU >= {cfg.iou_bar:g} during training")
    ctx.write_summary({"paper": PAPER, "claims": claims_table.rows(claims), "exact": exact, "grounding": rows,
                       "hardware": hardware_line(device)})
    ctx.write_report(f"# lab reproduce kosmos2\n\n{PAPER}\n\n" + claims_table.markdown(claims, scale_gap(cfg))
                     + "\n## Grounding\n\nAccuracy at IoU >= " + f"{cfg.iou_bar:g}, overall and per expression kind; dev rows "
                     "are where settings are chosen, test rows are only reported.\n\n" + markdown_table(rows)
                     + "\n![accuracy by kind](grounding.png)\n" + ("" if cfg.model else "\n![loss](loss.png)\n\n![dev accuracy](dev_accuracy.png)\n"))
    claims_table.print_claims(claims, "lab reproduce kosmos2")
    split = "test" if cfg.report_test or cfg.model else "dev"
    print(f"grounding accuracy ({split}): " + "; ".join(f"{r['model']} {r['test']} {r['accuracy']:.3f}" for r in rows
                                                        if r["split"] == split)
          + f"; {sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold")
