"""`lab detect deepfake-voice`: tell real speech from resynthesised and synthetic speech with cepstral features.

Real: Debian's asterisk-core-sounds-en-wav studio prompts (8 kHz, CC BY-SA 3.0; installed by
labcli/detect/setup_audio.sh) with their transcripts. Fakes (labcli/detect/voice_fakes.py; synthetic stand-ins made
here, not real-world deepfakes): Griffin-Lim resynthesis of each prompt's linear and 40-band mel spectrogram, WORLD
vocoder resynthesis, a Codec 2 round trip and espeak-ng TTS of the transcript (the easy case). Prompts are split by
text into train / validation / test; some fake types are held out of training (and of the validation choice);
robustness is measured after G.711 mu-law re-coding. Detectors (labcli/detect/voice.py): LFCC or CQCC-style cepstra
with logistic regression on utterance statistics, an ASVspoof-style GMM, or a small CNN. The detector that
`lab serve detector` serves by default is the one with the best validation AUC on the training fake types; the
test rows are never used for that choice. Reported: accuracy, AUC and EER per detector, fake type and condition.
"""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from labcli import runs
from labcli.config import RecipeConfig
from labcli.detect import common, deepfake_store, voice
from labcli.detect.voice_fakes import CODEC2_MODES, FAKES, make_fake, mu_law
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

SOUNDS = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
NEEDS = ["audio"]  # `lab check` looks for the Debian audio packages
SETUP = "run labcli/detect/setup_audio.sh (apt: asterisk-core-sounds-en-wav asterisk-core-sounds-en espeak-ng codec2)"
Fake = Literal[tuple(FAKES)]
Detector = Literal[tuple(voice.DETECTORS)]


class Config(RecipeConfig):
    sounds_dir: str = Field(str(SOUNDS), description="Folder of real prompt WAVs (asterisk-core-sounds-en-wav)")
    max_prompts: int = Field(100, ge=3, description="Prompts used (longest transcripts first); each gives one real and one clip per fake type")
    max_seconds: float = Field(0.0, ge=0, description="Keep only the first N seconds of each prompt (0: whole prompts; the longest run to 73 s)")
    test_fraction: float = Field(0.3, gt=0, lt=1, description="Share of prompts (by text) held out for testing")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="Share of prompts (by text) held out for choosing the served detector")
    train_fakes: list[Fake] = Field(default_factory=lambda: ["griffin-lim", "espeak"], min_length=1, description="Fake types seen in training and in the validation choice")
    heldout_fakes: list[Fake] = Field(default_factory=lambda: ["mel-griffin-lim", "world", "codec2"], description="Fake types only seen at test time")
    detectors: list[Detector] = Field(default_factory=lambda: list(voice.DETECTORS), min_length=1, description="Detectors (feature-model)")
    gmm_components: int = Field(16, ge=1, description="Gaussians per class for the LFCC/CQCC-GMM")
    cnn_epochs: int = Field(10, ge=1, description="Epochs of the small CNN on 40-frame LFCC/CQCC crops")
    griffin_lim_iters: int = Field(32, ge=1, description="Griffin-Lim phase-reconstruction iterations (linear and mel)")
    codec2_mode: str = Field("3200", description=f"Codec 2 bit rate for the codec2 fake: {', '.join(CODEC2_MODES)}")
    score_file: str = Field("", description="Optional WAV to score with the trained detectors (P(fake))")

    @field_validator("codec2_mode", mode="before")
    @classmethod
    def _mode_as_text(cls, value):
        return str(value)  # `codec2_mode=1300` arrives as an int


def check_tools(cfg: Config) -> None:
    kinds = cfg.train_fakes + cfg.heldout_fakes
    if cfg.codec2_mode not in CODEC2_MODES:
        raise UserError(f"unknown codec2_mode '{cfg.codec2_mode}'", f"choose from: {', '.join(CODEC2_MODES)}")
    if cfg.test_fraction + cfg.val_fraction >= 0.9:
        raise UserError(f"test_fraction {cfg.test_fraction} + val_fraction {cfg.val_fraction} leave almost no training prompts",
                        "keep their sum below 0.9")
    for kind, tool in (("espeak", "espeak-ng"), ("codec2", "c2enc"), ("codec2", "c2dec")):
        if kind in kinds and shutil.which(tool) is None:
            raise UserError(f"{tool} is not installed (needed for the {kind} fakes)", SETUP)
    if ("mel-griffin-lim" in kinds or any(d.startswith("cqcc") for d in cfg.detectors)) and importlib.util.find_spec("librosa") is None:
        raise UserError("librosa is not installed (mel Griffin-Lim fakes and CQCC features need it)", "pip install 'librosa>=0.10'")


def check(cfg: Config) -> None:
    """Missing tools and bad split settings, before a run (`lab check` reports the UserError raised)."""
    check_tools(cfg)


def load_prompts(cfg: Config):
    """[(name, transcript, audio)] for the longest-transcript prompts that exist as WAVs."""
    folder = Path(cfg.sounds_dir)
    if not folder.is_dir() or not any(folder.glob("*.wav")):
        raise UserError(f"no real speech WAVs in {folder}", SETUP)
    if not TRANSCRIPTS.is_file():
        raise UserError(f"transcripts missing: {TRANSCRIPTS}", SETUP)
    texts = {}
    for line in gzip.open(TRANSCRIPTS, "rt", encoding="utf-8", errors="replace"):
        if ":" in line and not line.startswith(";"):
            key, text = line.split(":", 1)
            if "/" not in key and (folder / f"{key.strip()}.wav").is_file() and text.strip():
                texts.setdefault(text.strip().lower(), key.strip())  # one prompt per distinct text
    chosen = sorted(texts.items(), key=lambda kv: (-len(kv[0]), kv[1]))[: cfg.max_prompts]
    keep = int(cfg.max_seconds * voice.RATE) or None
    return [(key, text, voice.read_wav(folder / f"{key}.wav")[:keep]) for text, key in chosen]


def split_prompts(n: int, cfg: Config, rng) -> np.ndarray:
    """'train' / 'val' / 'test' per prompt (a random split by prompt text; every split gets at least one)."""
    order = rng.permutation(n)
    n_test = max(1, int(round(cfg.test_fraction * n)))
    n_val = max(1, int(round(cfg.val_fraction * n)))
    split = np.full(n, "train", dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    return split


def save_examples(ctx, prompts, clips, is_test, detectors) -> list[dict]:
    """The first test prompt as files (its real WAV, and each fake as 16-bit WAV) with the run's scores for them."""
    first = int(np.flatnonzero(is_test)[0])
    folder = ctx.dir / "examples"
    runs.write_bytes(folder / "real.wav", voice.encode_wav(prompts[first][2]))
    files = [("real", folder / "real.wav")]
    for kind in clips:
        if kind != "real":
            runs.write_bytes(folder / f"fake-{kind}.wav", voice.encode_wav(clips[kind][first]))
            files.append((kind, folder / f"fake-{kind}.wav"))
    return [{"file": str(f.relative_to(ctx.dir)), "truth": "real" if kind == "real" else "fake", "kind": kind,
             "scores": voice.score(detectors, voice.read_wav(f))} for kind, f in files]


def evaluate(det, frames, kinds, part, split) -> list[tuple[str, str, float, float, float]]:
    """(fake type, condition, accuracy, auc, eer) of one detector on one split (`frames[condition][kind]`)."""
    from sklearn.metrics import accuracy_score, roc_auc_score

    out = []
    for kind in kinds:
        for cond, source in frames.items():
            real = [f for f, s in zip(source["real"], split) if s == part]
            fake = [f for f, s in zip(source[kind], split) if s == part]
            y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
            p_fake = det.score(real + fake)
            out.append((kind, cond, accuracy_score(y, p_fake >= 0.5), roc_auc_score(y, p_fake), common.equal_error_rate(y, p_fake)))
    return out


def summarise(name: str, validation: list[dict], rows: list[dict], best: str) -> dict:
    """One headline row: mean validation AUC and mean test AUC per (seen / held-out, condition)."""
    def mean_auc(**match):
        aucs = [r["auc"] for r in rows if r["detector"] == name and all(r[k] == v for k, v in match.items())]
        return float(np.mean(aucs)) if aucs else None

    row = {"detector": name, "validation auc": float(np.mean([r["auc"] for r in validation if r["detector"] == name]))}
    for seen in ("seen", "held-out"):
        for cond in ("clean", "mu-law re-coded"):
            row[f"test auc, {seen} ({cond})"] = mean_auc(**{"seen in training": seen, "test condition": cond})
    row["served"] = "yes" if name == best else ""
    return row


def run(cfg: Config, ctx) -> None:
    check_tools(cfg)
    if cfg.score_file:
        voice.read_wav(Path(cfg.score_file))  # fail early on an unreadable file
    seed_everything(cfg.seed)
    prompts = load_prompts(cfg)
    rng = np.random.default_rng(cfg.seed)
    split = split_prompts(len(prompts), cfg, rng)
    kinds = list(dict.fromkeys(cfg.train_fakes + cfg.heldout_fakes))
    feature_kinds = list(dict.fromkeys(d.split("-", 1)[0] for d in cfg.detectors))
    clips = {"real": [], **{k: [] for k in kinds}}
    with common.progress() as bar, tempfile.TemporaryDirectory() as tmp:
        task = bar.add_task(f"making fakes ({', '.join(kinds)})", total=len(prompts))
        for i, (_, text, x) in enumerate(prompts):
            clips["real"].append(voice.clean(x))
            for k in kinds:
                clips[k].append(voice.clean(make_fake(k, x, text, griffin_lim_iters=cfg.griffin_lim_iters, codec2_mode=cfg.codec2_mode,
                                                      seed=cfg.seed, rng=rng, workdir=Path(tmp), i=i)))
            bar.advance(task)
        task = bar.add_task(f"features ({', '.join(feature_kinds)}; clean and mu-law re-coded)", total=len(clips) * len(feature_kinds))
        frames = {}  # feature kind -> condition -> clip kind -> per-clip frame matrices
        for fk in feature_kinds:
            frames[fk] = {"clean": {}, "mu-law re-coded": {}}
            for k, v in clips.items():
                frames[fk]["clean"][k] = [voice.FEATURES[fk](c) for c in v]
                frames[fk]["mu-law re-coded"][k] = [voice.FEATURES[fk](voice.clean(mu_law(c))) for c in v]
                bar.advance(task)

        rows, validation, detectors = [], [], {}
        for name in cfg.detectors:
            clean = frames[name.split("-", 1)[0]]["clean"]
            real_train = [f for f, s in zip(clean["real"], split) if s == "train"]
            train_sets, y_train = list(real_train), [0] * len(real_train)
            for k in cfg.train_fakes:
                extra = [f for f, s in zip(clean[k], split) if s == "train"]
                train_sets += extra
                y_train += [1] * len(extra)
            # balance real vs fake by repeating the real clips once per seen fake type
            reps = len(cfg.train_fakes) - 1
            train_sets += real_train * reps
            y_train += [0] * len(real_train) * reps
            det = detectors[name] = voice.make_detector(name, gmm_components=cfg.gmm_components, cnn_epochs=cfg.cnn_epochs,
                                                        seed=cfg.seed, bar=bar).fit(train_sets, np.array(y_train))
            for k, _, acc, auc, eer in evaluate(det, {"clean": clean}, cfg.train_fakes, "val", split):
                validation.append({"detector": name, "fake type": k, "accuracy": acc, "auc": auc, "eer": eer})
            for k, cond, acc, auc, eer in evaluate(det, frames[name.split("-", 1)[0]], kinds, "test", split):
                rows.append({"detector": name, "fake type": k, "seen in training": "seen" if k in cfg.train_fakes else "held-out",
                             "test condition": cond, "accuracy": acc, "auc": auc, "eer": eer})
    for row in validation + rows:
        ctx.log(**row)
    best = deepfake_store.choose_best(validation)
    deepfake_store.save(ctx.dir, "voice", detectors, best, {"rate": voice.RATE, "features": feature_kinds, "threshold": 0.5,
                                                            "chosen_on": "validation prompts, training fake types, clean"})
    examples = save_examples(ctx, prompts, clips, split == "test", detectors)
    scored = {"file": cfg.score_file, **voice.score(detectors, voice.read_wav(Path(cfg.score_file)))} if cfg.score_file else None
    headline = [summarise(name, validation, rows, best) for name in cfg.detectors]
    fig, ax = common.new_figure()
    first = frames[feature_kinds[0]]["clean"]
    for k, v in first.items():
        ax.plot(np.mean([f[:, :20].mean(0) for f in v], 0), label=k, lw=2 if k == "real" else 1)
    ax.set_xlabel(f"{feature_kinds[0].upper()} index")
    ax.set_ylabel("mean value over clips")
    ax.legend()
    plot = common.save_figure(fig, ctx.path("cepstra_means.png"))
    counts = {part: int((split == part).sum()) for part in ("train", "val", "test")}
    ctx.write_summary({"prompts": len(prompts), "train_prompts": counts["train"], "val_prompts": counts["val"],
                       "test_prompts": counts["test"], "headline": headline, "validation": validation, "results": rows,
                       "best_detector": best, "detector_dir": deepfake_store.FOLDER, "examples": examples, "scored_file": scored})
    ctx.write_report(
        f"# Synthetic-speech detection on Asterisk prompts\n\n{len(prompts)} real prompts (asterisk-core-sounds-en-wav, 8 kHz, "
        f"CC BY-SA 3.0), split by text into {counts['train']} training, {counts['val']} validation and {counts['test']} test "
        f"prompts. Fakes made here: {', '.join(kinds)}; the detectors train on {', '.join(cfg.train_fakes)} only. All clips "
        f"silence-trimmed and normalised to -20 dBFS RMS. Features: LFCC (linear filterbank, 10 ms frames) and CQCC-style "
        f"(librosa constant-Q, 8 ms frames), + deltas.\n\n## Summary (mean AUC over fake types)\n\n{markdown_table(headline)}\n"
        f"The served detector (`{best}`) has the highest mean AUC on the validation prompts with the training fake types "
        f"(ties: lower EER); no test row and no held-out fake type enters that choice.\n\n## Test prompts\n\n"
        f"{markdown_table(rows)}\n![cepstra]({plot})\n\n"
        f"Fitted detectors are in `{deepfake_store.FOLDER}/`; serve them with `lab serve detector --run {ctx.dir}`.\n\n"
        + (f"Scored file: `{scored}`\n\n" if scored else "")
        + "Reference: ASVspoof 2019 LA LFCC-GMM baseline EER 8.09 % (real attacks, 16 kHz); not comparable.\n\n"
        "## What this data is and is not\n\nReal speech of one studio voice, telephone band. The fakes are synthetic "
        "stand-ins (vocoder and codec resynthesis, espeak-ng TTS), not real-world voice-cloning deepfakes; espeak-ng is "
        "trivially detected and kept as the easy case. Not evidence of performance against neural TTS or voice conversion.\n")
    print(markdown_table(headline))
    print(f"served by default: {best} (best validation AUC on {', '.join(cfg.train_fakes)})")
    if scored:
        print(scored)
