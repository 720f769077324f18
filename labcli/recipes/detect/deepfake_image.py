"""`lab detect deepfake-image`: detect images made by up-sampling decoders, from their frequency artefacts.

Real: 32x32 grey patches of scikit-image's bundled photographs and its `lfw_subset` faces (labcli/detect/image.py),
each photo one source; train, validation and test sources are disjoint and the faces are reported apart. Fakes: the
same patches through small autoencoders with transposed-convolution, nearest or bilinear up-sampling decoders
(synthetic stand-ins made here, not real-world deepfakes). Detectors: radial power spectrum + logistic regression,
log-DCT + logistic regression, and a small CNN. One decoder type is held out of training; robustness is measured
after Gaussian blur and JPEG re-compression. The detector `lab serve detector` serves by default is the one with the
best AUC on the validation photos with the training decoders; no test row enters that choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from labcli import runs
from labcli.config import RecipeConfig
from labcli.detect import common, deepfake_store, image
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

Photo = Literal[tuple(image.PHOTOS)]
Decoder = Literal[tuple(image.DECODERS)]
Detector = Literal[tuple(image.DETECTORS)]


class Config(RecipeConfig):
    train_photos: list[Photo] = Field(default_factory=lambda: image.PHOTOS[:7], min_length=1, description="Source photos for training")
    val_photos: list[Photo] = Field(default_factory=lambda: image.PHOTOS[7:9], min_length=1, description="Source photos for choosing the served detector")
    test_photos: list[Photo] = Field(default_factory=lambda: image.PHOTOS[9:], min_length=1, description=f"Source photos for testing; '{image.FACES}' = LFW faces")
    patches_per_photo: int = Field(120, ge=1, description="32x32 patches cut from each photo (non-overlapping, random subset)")
    train_decoders: list[Decoder] = Field(default_factory=lambda: ["transposed", "nearest"], min_length=1, description="Fake types seen in training and in the validation choice")
    heldout_decoders: list[Decoder] = Field(default_factory=lambda: ["bilinear"], description="Fake types only seen at test time")
    detectors: list[Detector] = Field(default_factory=lambda: list(image.DETECTORS), min_length=1, description="Detectors")
    ae_epochs: int = Field(30, ge=1, description="Autoencoder (fake generator) training epochs")
    cnn_epochs: int = Field(10, ge=1, description="CNN detector training epochs")
    blur_sigma: float = Field(2.0, description="Gaussian blur for the robustness test (pixels)")
    jpeg_quality: int = Field(75, ge=1, le=95, description="JPEG quality for the robustness test")
    score_file: str = Field("", description="Optional image file to score with the trained detectors (P(fake), mean over 32x32 tiles)")


def save_examples(ctx, real, fakes, is_test, detectors) -> list[dict]:
    """The first test patch as 8-bit PNGs (real, and each decoder's fake of it) with the run's scores for the files."""
    first = int(np.flatnonzero(is_test)[0])
    files = [("real", real[first])] + [(d, f[first]) for d, f in fakes.items()]
    out = []
    for kind, patch in files:
        path = ctx.dir / "examples" / ("real.png" if kind == "real" else f"fake-{kind}.png")
        runs.write_bytes(path, image.encode_png(patch))
        out.append({"file": str(path.relative_to(ctx.dir)), "truth": "real" if kind == "real" else "fake", "kind": kind,
                    "scores": image.score(detectors, image.read_image(path))})
    return out


def labelled(real, fake) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([real, fake]), np.r_[np.zeros(len(real)), np.ones(len(fake))]


def metrics(det, X, y) -> dict:
    from sklearn.metrics import accuracy_score, roc_auc_score

    p_fake = det.score(X)
    return {"accuracy": accuracy_score(y, p_fake >= 0.5), "auc": roc_auc_score(y, p_fake), "eer": common.equal_error_rate(y, p_fake)}


def run(cfg: Config, ctx) -> None:
    photos = cfg.train_photos + cfg.val_photos + cfg.test_photos
    if len(set(photos)) < len(photos):
        raise UserError(f"a photo is in more than one of train_photos, val_photos, test_photos: {photos}",
                        "give every source photo to one split only")
    if cfg.score_file:
        image.read_image(Path(cfg.score_file))  # fail early on an unreadable file
    seed_everything(cfg.seed)
    real, src = image.photo_patches(photos, cfg.patches_per_photo, cfg.seed)
    part = np.array(["train"] * len(cfg.train_photos) + ["val"] * len(cfg.val_photos) + ["test"] * len(cfg.test_photos))[src]
    is_train, is_val, is_test = part == "train", part == "val", part == "test"
    is_face = np.isin(src, [i for i, name in enumerate(photos) if name == image.FACES])
    # test rows per real source: scikit-image photos and LFW faces, each where it is a test source
    groups = {g: m for g, m in (("photos", is_test & ~is_face), ("lfw faces", is_test & is_face)) if m.any()}
    decoders = list(dict.fromkeys(cfg.train_decoders + cfg.heldout_decoders))
    seen = cfg.train_decoders
    with common.progress() as bar:
        fakes = {d: image.make_fakes(d, real[is_train], real, cfg.ae_epochs, cfg.seed, bar) for d in decoders}
        # training: real train patches vs fakes of train patches from the seen decoders (balanced by repetition)
        X_train, y_train = labelled(np.tile(real[is_train], (len(seen), 1, 1)), np.concatenate([fakes[d][is_train] for d in seen]))
        test_sets = {}
        for group, mask in groups.items():
            for d in decoders:
                tag = "seen" if d in seen else "held-out"
                X, y = labelled(real[mask], fakes[d][mask])
                test_sets[(group, d, tag, "clean")] = (X, y)
                test_sets[(group, d, tag, f"blur s={cfg.blur_sigma:g}")] = (image.blur(X, cfg.blur_sigma), y)
                test_sets[(group, d, tag, f"jpeg q={cfg.jpeg_quality}")] = (image.jpeg(X, cfg.jpeg_quality), y)
        rows, validation, detectors = [], [], {}
        for name in cfg.detectors:
            det = detectors[name] = image.make_detector(name, cnn_epochs=cfg.cnn_epochs, seed=cfg.seed, bar=bar).fit(X_train, y_train)
            for d in seen:
                validation.append({"detector": name, "fake type": d, **metrics(det, *labelled(real[is_val], fakes[d][is_val]))})
            for (group, d, tag, cond), (X, y) in test_sets.items():
                rows.append({"detector": name, "real source": group, "fake type": d, "seen in training": tag,
                             "test condition": cond, **metrics(det, X, y)})
    for row in validation + rows:
        ctx.log(**row)
    best = deepfake_store.choose_best(validation)
    deepfake_store.save(ctx.dir, "image", detectors, best, {"patch": image.PATCH, "threshold": 0.5,
                                                            "chosen_on": "validation photos, training decoders, clean"})
    examples = save_examples(ctx, real, fakes, is_test, detectors)
    scored = {"file": cfg.score_file, **image.score(detectors, image.read_image(Path(cfg.score_file)))} if cfg.score_file else None
    headline = []
    for name in cfg.detectors:
        row = {"detector": name, "validation auc": float(np.mean([r["auc"] for r in validation if r["detector"] == name]))}
        for group in groups:
            for cond in ("clean", f"blur s={cfg.blur_sigma:g}", f"jpeg q={cfg.jpeg_quality}"):
                aucs = [r["auc"] for r in rows if r["detector"] == name and r["real source"] == group and r["test condition"] == cond]
                row[f"test auc, {group} ({cond})"] = float(np.mean(aucs))
        row["served"] = "yes" if name == best else ""
        headline.append(row)

    fig, ax = common.new_figure()
    ax.plot(image.radial_spectrum(real[is_test]).mean(0), "k-", lw=2, label="real (test sources)")
    if (is_face & is_test).any():
        ax.plot(image.radial_spectrum(real[is_face & is_test]).mean(0), "k--", label="real: LFW faces (resized)")
    for d, f in fakes.items():
        ax.plot(image.radial_spectrum(f[is_test]).mean(0), label=f"fake: {d} decoder")
    ax.set_xlabel("spatial frequency (radial bin, low -> high)")
    ax.set_ylabel("mean log power")
    ax.legend()
    plot1 = common.save_figure(fig, ctx.path("radial_spectrum.png"))
    fig, axes = common.new_figure(7, 2)
    axes.axis("off")
    strip = [real[is_test][:5]] + [fakes[d][is_test][:5] for d in fakes]
    axes.imshow(np.concatenate([np.concatenate(list(s), 1) for s in strip], 0), cmap="gray")
    axes.set_title("rows: real, then " + ", ".join(fakes) + " decoder fakes")
    plot2 = common.save_figure(fig, ctx.path("examples.png"))
    ctx.write_summary({"real_patches": len(real), "face_patches": int(is_face.sum()), "train_photos": cfg.train_photos,
                       "val_photos": cfg.val_photos, "test_photos": cfg.test_photos, "headline": headline,
                       "validation": validation, "results": rows, "best_detector": best,
                       "detector_dir": deepfake_store.FOLDER, "examples": examples, "scored_file": scored})
    ctx.write_report(
        f"# Synthetic-image detection from up-sampling artefacts\n\nReal: {len(real)} 32x32 grey patches of scikit-image photos"
        f" ({int(is_face.sum())} of them LFW faces from `lfw_subset`, 25x25 resized to 32x32 with Lanczos); split by source: "
        f"training {', '.join(cfg.train_photos)}; validation {', '.join(cfg.val_photos)}; test {', '.join(cfg.test_photos)} "
        f"(rows report the test photos and the faces apart). Fakes: reconstructions by autoencoders trained here on the "
        f"training patches ({cfg.ae_epochs} epochs) with {', '.join(fakes)} up-sampling decoders; detectors train on "
        f"{', '.join(seen)} and never see {', '.join(cfg.heldout_decoders) or 'nothing'}.\n\n"
        f"## Summary (mean AUC over decoders)\n\n{markdown_table(headline)}\n"
        f"The served detector (`{best}`) has the highest mean AUC on the validation photos with the training decoders "
        f"(ties: lower EER); no test row and no held-out decoder enters that choice.\n\n"
        f"![spectra]({plot1})\n\n![examples]({plot2})\n\n## Test sources\n\n"
        f"{markdown_table(rows)}\nFitted detectors are in `{deepfake_store.FOLDER}/`; "
        f"serve them with `lab serve detector --run {ctx.dir}`.\n\n" + (f"Scored file: `{scored}`\n\n" if scored else "")
        + "## What this data is and is not\n\nThe fakes are synthetic stand-ins made here by tiny "
        "autoencoders, not real-world deepfakes (no GAN or diffusion face generator). They show the up-sampling "
        "fingerprint that spectral detectors key on, and how easily blur or JPEG removes it; they do not measure "
        "performance on real manipulated media. The LFW faces are real photographs of faces, but tiny and resized.\n")
    print(markdown_table(headline))
    print(f"served by default: {best} (best validation AUC on {', '.join(seen)})")
    if scored:
        print(scored)
