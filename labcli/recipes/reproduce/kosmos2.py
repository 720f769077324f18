"""`lab reproduce kosmos2`: Kosmos-2's grounding through location tokens (Peng et al. 2023), at CPU scale.

Exact checks: boxes -> `<patch_index_XXXX>` pairs on the 32 x 32 grid -> boxes (labcli/models/
location_tokens.py) within one cell, the same entities and boxes as transformers' own Kosmos-2
post-processing on crafted strings, and a forward pass of a tiny `Kosmos2ForConditionalGeneration`
built from its config. The claim at small scale: a small vision-language model trained here on
synthetic scenes (labcli/models/grounding_vlm.py) names the box of "the small red circle" by its two
location cells, at IoU >= 0.5 on held-out scenes and on held-out (colour, shape) combinations,
against the same model without the image (language only).
"""

from __future__ import annotations

from pydantic import Field

from labcli.config import RecipeConfig
from labcli.engine.trainer import TrainConfig
from labcli.runs import Run

PAPER = "Kosmos-2: Grounding Multimodal Large Language Models to the World (Peng et al. 2023)"
HELD_OUT = [("red", "circle"), ("blue", "square"), ("yellow", "triangle")]


class Config(RecipeConfig):
    train_scenes: int = Field(5000, ge=10, description="Generated training scenes")
    test_scenes: int = Field(300, ge=1, description="Held-out scenes per test set")
    objects: int = Field(3, ge=1, le=5, description="Shapes per scene")
    width: int = Field(64, ge=8, description="Width of the grounding model")
    layers: int = Field(2, ge=1, description="Transformer layers of the grounding model")
    train: TrainConfig = TrainConfig(max_steps=2000, batch_size=32, micro_batch_size=32, lr=2e-3, warmup_steps=50,
                                     weight_decay=0.01, eval_batches=2)
    iou_bar: float = Field(0.5, description="A box counts as right at IoU >= this")
    accuracy_bar: float = Field(0.8, description="The issue's bar for grounding accuracy")


def check(cfg: Config) -> list[str]:
    if cfg.width % 4:
        return [f"width={cfg.width} is not a multiple of 4 attention heads (hint: use a multiple of 4)"]
    return []


def plan(cfg: Config) -> str:
    return (f"exact location-token checks; train a {cfg.layers}x{cfg.width} grounding model with and without the image "
            f"on {cfg.train_scenes} scenes ({cfg.train.max_steps} steps each); {cfg.test_scenes} held-out scenes and "
            f"{cfg.test_scenes} with held-out colour-shape combinations")


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


class Scenes:
    """A scene list as examples for the engine: image tensor, word ids, target cells."""

    def __init__(self, scenes):
        import torch

        from labcli.models import grounding_vlm as g

        self.images = torch.tensor(__import__("numpy").stack([s.image for s in scenes]))
        self.words = g.encode_text([s.expression for s in scenes])
        self.targets = g.targets([s.box for s in scenes])
        self.boxes = [s.box for s in scenes]

    def __len__(self):
        return len(self.boxes)

    def __getitem__(self, i):
        return {"images": self.images[i], "words": self.words[i], "targets": self.targets[i]}


def loss_fn(model, batch):
    import torch.nn.functional as F

    logits = model(batch["images"], batch["words"])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1))


def accuracy(model, data: Scenes, bar: float) -> dict:
    import numpy as np

    from labcli.models import grounding_vlm as g

    model.eval()
    boxes = []
    for lo in range(0, len(data), 256):
        boxes += g.predict_boxes(model, data.images[lo:lo + 256], data.words[lo:lo + 256])
    ious = np.array([g.iou(a, b) for a, b in zip(boxes, data.boxes)])
    return {"accuracy": float((ious >= bar).mean()), "mean_iou": float(ious.mean()), "n": len(data)}


def run(cfg: Config, ctx: Run) -> None:
    import random

    import torch

    from labcli import runs
    from labcli.engine.distributed import pick_device
    from labcli.engine.trainer import train
    from labcli.errors import UserError
    from labcli.models import grounding_vlm as g

    if problems := check(cfg):
        raise UserError(problems[0])
    runs.seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    exact = exact_checks(cfg.seed)
    print(f"exact: round trip max error {exact['round_trip_max_error']:.4f} (< 1/32), {exact['crafted_agree']}/"
          f"{exact['crafted_strings']} crafted strings agree with transformers, tiny Kosmos-2 logits {exact['tiny_kosmos2_logits']}",
          flush=True)
    seen = [(c, s) for c in g.COLOURS for s in g.SHAPES if (c, s) not in HELD_OUT]
    rng = random.Random(cfg.seed)
    train_set = Scenes([g.make_scene(rng, cfg.objects, seen) for _ in range(cfg.train_scenes)])
    tests = {"held-out scenes": Scenes([g.make_scene(rng, cfg.objects, seen) for _ in range(cfg.test_scenes)]),
             "held-out combinations": Scenes([g.make_scene(rng, cfg.objects, HELD_OUT) for _ in range(cfg.test_scenes)])}
    rows = []
    for name, use_image in (("vision + language", True), ("language only", False)):
        torch.manual_seed(cfg.seed)
        model = g.GroundingModel(cfg.width, cfg.layers, 4, use_image)
        print(f"training {name} ({sum(p.numel() for p in model.parameters()):,} parameters) on {len(train_set)} scenes", flush=True)
        result = train(model, train_set, _collate, cfg.train, ctx.sub(name.replace(" + ", "-").replace(" ", "-")), seed=cfg.seed,
                       device=device, loss_fn=loss_fn, progress=False)
        model = result.model.cpu()
        for test, data in tests.items():
            rows.append({"model": name, "test": test, **accuracy(model, data, cfg.iou_bar), "train_s": round(result.wall_s, 1)})
            print(f"{name}, {test}: accuracy {rows[-1]['accuracy']:.3f}", flush=True)
    if ctx.is_main:
        write_results(cfg, ctx, exact, rows, device)


def _collate(items):
    import torch

    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def claims_for(cfg: Config, exact: dict, rows: list[dict]):
    from labcli.eval.claims import Claim, all_of, verdict

    by = {(r["model"], r["test"]): r for r in rows}
    vl = [by[("vision + language", t)]["accuracy"] for t in ("held-out scenes", "held-out combinations")]
    lo = [by[("language only", t)]["accuracy"] for t in ("held-out scenes", "held-out combinations")]
    return [
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
        Claim(f"grounding: the referred object's box at IoU >= {cfg.iou_bar:g}, also for unseen attribute combinations",
              "Tables 2-3, zero-shot: Flickr30k Entities R@1 78.7 (phrase grounding), RefCOCO 57.4; the issue's bar "
              f">= {cfg.accuracy_bar:g} on held-out scenes and combinations, above a language-only baseline",
              f"{cfg.test_scenes} held-out scenes each; {cfg.layers}x{cfg.width} model, {cfg.train_scenes} training "
              f"scenes, {cfg.train.max_steps} steps; held-out combinations {', '.join(' '.join(h) for h in HELD_OUT)}",
              f"{vl[0]:.3f} / {vl[1]:.3f} with the image vs {lo[0]:.3f} / {lo[1]:.3f} language only",
              all_of(*(verdict(v, cfg.accuracy_bar - 1e-9, partly=max(lo)) for v in vl))),
    ]


def scale_gap(cfg: Config) -> str:
    return ("Kosmos-2 is a 1.6B-parameter multimodal LM trained on GRIT (91M image-text pairs with 115M grounded "
            f"boxes) that writes location tokens autoregressively; here a {cfg.layers}x{cfg.width} encoder over 8x8 CNN "
            "features of 32x32 synthetic scenes with four classification heads (the rows and columns of the two "
            "location cells, the 1024 tokens factorised), trained from scratch on one kind of expression "
            "(size colour shape; no relations). The tiny Kosmos-2 is random weights: it checks the architecture runs, "
            "not what it knows. One seed.")


def write_results(cfg: Config, ctx: Run, exact: dict, rows: list[dict], device) -> None:
    from labcli.eval import claims as claims_table
    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import markdown_table

    claims = claims_for(cfg, exact, rows)
    ctx.write_summary({"paper": PAPER, "claims": claims_table.rows(claims), "exact": exact, "grounding": rows,
                       "hardware": hardware_line(device)})
    ctx.write_report(f"# lab reproduce kosmos2\n\n{PAPER}\n\n" + claims_table.markdown(claims, scale_gap(cfg))
                     + "\n## Grounding\n\n" + markdown_table(rows) + "\n")
    claims_table.print_claims(claims, "lab reproduce kosmos2")
    print("grounding accuracy: " + "; ".join(f"{r['model']} {r['test']} {r['accuracy']:.3f}" for r in rows)
          + f"; {sum(c.verdict == 'holds' for c in claims)}/{len(claims)} claims hold")
