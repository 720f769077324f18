"""`lab detect deepfake-voice`: tell real speech from resynthesised and synthetic speech with cepstral features.

Real: Debian's asterisk-core-sounds-en-wav studio prompts (8 kHz, CC BY-SA 3.0; installed by
labcli/detect/setup_audio.sh) with their transcripts. Fakes (synthetic stand-ins made here, not real-world
deepfakes): Griffin-Lim resynthesis of each prompt's linear magnitude spectrogram and of its 40-band mel
spectrogram (librosa), WORLD vocoder resynthesis (pyworld), a Codec 2 round trip (Debian codec2) and espeak-ng TTS
of the transcript (the easy case). Every clip is silence-trimmed and loudness-normalised so length and level are no
shortcut; train/test are split by prompt text; some fake types are held out of training; robustness is measured
after G.711 mu-law re-coding. Features: LFCC and CQCC-style (constant-Q) cepstra with deltas. Detectors per feature:
utterance statistics + logistic regression, the ASVspoof-style GMM (log-likelihood ratio), and a small CNN on
40-frame patches. Reported: accuracy, AUC and EER. The fitted detectors are saved in RUN/detector/ for
`lab serve detector`.
"""

from __future__ import annotations

import gzip
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pydantic import Field, field_validator

from labcli import runs
from labcli.config import RecipeConfig
from labcli.detect import common, deepfake_store
from labcli.detect.deepfake_store import dump_joblib, load_joblib
from labcli.detect.voice_fakes import (
    RATE,
    codec2,
    espeak,
    griffin_lim,
    mel_griffin_lim,
    mu_law,
    world,
)
from labcli.errors import UserError
from labcli.eval.tables import markdown_table
from labcli.runs import seed_everything

SOUNDS = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
FAKES = ["griffin-lim", "mel-griffin-lim", "world", "codec2", "espeak"]
DETECTORS = ["lfcc-logistic", "lfcc-gmm", "lfcc-cnn", "cqcc-logistic", "cqcc-gmm", "cqcc-cnn"]
SETUP = "run labcli/detect/setup_audio.sh (apt: asterisk-core-sounds-en-wav asterisk-core-sounds-en espeak-ng codec2)"


class Config(RecipeConfig):
    sounds_dir: str = Field(str(SOUNDS), description="Folder of real prompt WAVs (asterisk-core-sounds-en-wav)")
    max_prompts: int = Field(150, description="Prompts used (longest transcripts first); each gives one real and one clip per fake type")
    max_seconds: float = Field(0.0, ge=0, description="Keep only the first N seconds of each prompt (0: whole prompts; the longest run to 73 s)")
    test_fraction: float = Field(0.3, description="Share of prompts (by text) held out for testing")
    train_fakes: list[str] = Field(default_factory=lambda: ["griffin-lim", "espeak"], description=f"Fake types seen in training, from {FAKES}")
    heldout_fakes: list[str] = Field(default_factory=lambda: ["mel-griffin-lim", "world", "codec2"], description="Fake types only seen at test time")
    detectors: list[str] = Field(default_factory=lambda: list(DETECTORS), description=f"Detectors: {DETECTORS}")
    gmm_components: int = Field(16, description="Gaussians per class for the LFCC/CQCC-GMM")
    cnn_epochs: int = Field(10, description="Epochs of the small CNN on 40-frame LFCC/CQCC crops")
    griffin_lim_iters: int = Field(32, description="Griffin-Lim phase-reconstruction iterations (linear and mel)")
    codec2_mode: str = Field("3200", description="Codec 2 bit rate for the codec2 fake: 3200, 2400, 1600, 1400, 1300, 1200, 700C")
    score_file: str = Field("", description="Optional WAV to score with the trained detectors (P(fake))")

    @field_validator("codec2_mode", mode="before")
    @classmethod
    def _mode_as_text(cls, value):
        return str(value)  # `codec2_mode=1300` arrives as an int


def decode(data: bytes, what: str = "request") -> np.ndarray:
    """A PCM WAV file's bytes -> mono float audio at 8 kHz; one-line UserError for anything that is not usable audio."""
    from scipy.io import wavfile
    from scipy.signal import resample_poly

    if not data:
        raise UserError(f"audio {what} is empty", "send a PCM WAV file")
    try:
        rate, x = wavfile.read(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - scipy raises assorted errors (even UnboundLocalError) on broken files
        raise UserError(f"cannot read audio {what}: {str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__}",
                        "give a PCM WAV file") from None
    scale = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0**31, np.dtype(np.uint8): 128.0}.get(x.dtype, 1.0)
    x = (x.astype(np.float64) - (128.0 if x.dtype == np.uint8 else 0.0)) / scale
    if x.ndim > 1:
        x = x.mean(1)
    if not np.isfinite(x).all():
        raise UserError(f"audio {what} has NaN or infinite samples", "give a PCM WAV file of speech")
    if rate != RATE:
        from math import gcd

        g = gcd(rate, RATE)
        x = resample_poly(x, RATE // g, rate // g)
    if len(x) < RATE // 10:
        raise UserError(f"audio {what} is shorter than 0.1 s", "give a clip of speech")
    return x


def read_wav(path: Path) -> np.ndarray:
    """decode() of a file on disk."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read audio file {path}: {exc.strerror}", "give a PCM WAV file") from None
    return decode(data, f"file {path}")


def encode_wav(x: np.ndarray) -> bytes:
    """16-bit PCM WAV bytes at 8 kHz."""
    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, RATE, (np.clip(x, -1, 32767 / 32768) * 32768).round().astype(np.int16))
    return buf.getvalue()


def clean(x: np.ndarray) -> np.ndarray:
    """Trim leading/trailing frames 40 dB below the loudest, then normalise RMS to -20 dBFS."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 200)[::80]
    energy = 10 * np.log10((frames**2).mean(1) + 1e-12)
    voiced = np.flatnonzero(energy > energy.max() - 40)
    x = x[voiced[0] * 80 : voiced[-1] * 80 + 200] if len(voiced) else x
    return x * (10 ** (-20 / 20) / (np.sqrt((x**2).mean()) + 1e-12))


def lfcc(x: np.ndarray, n_filters: int = 20, n_ceps: int = 20) -> np.ndarray:
    """Linear-frequency cepstral coefficients + deltas per 25 ms frame (10 ms hop)."""
    from scipy.fft import dct

    frames = np.lib.stride_tricks.sliding_window_view(x, 200)[::80] * np.hamming(200)
    power = np.abs(np.fft.rfft(frames, 256)) ** 2
    edges = np.linspace(0, power.shape[1] - 1, n_filters + 2)
    bins = np.arange(power.shape[1])
    fb = np.stack([np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
                   for lo, c, hi in zip(edges[:-2], edges[1:-1], edges[2:])])
    ceps = dct(np.log(power @ fb.T + 1e-10), type=2, axis=1, norm="ortho")[:, :n_ceps]
    delta = np.gradient(ceps, axis=0)
    return np.concatenate([ceps, delta], 1)


def cqcc(x: np.ndarray, n_ceps: int = 20) -> np.ndarray:
    """CQCC-style features (after Todisco et al. 2016) + deltas per 8 ms frame: librosa's constant-Q transform
    (62.5 Hz - 3.8 kHz, 12 bins per octave), log power, linear interpolation onto a uniform frequency grid, DCT-II."""
    import librosa
    from scipy.fft import dct

    freqs = librosa.cqt_frequencies(n_bins=72, fmin=62.5, bins_per_octave=12)
    power = np.abs(librosa.cqt(x, sr=RATE, hop_length=64, fmin=62.5, n_bins=72, bins_per_octave=12)) ** 2
    log_power = np.log(power + 1e-10).T  # frames x bins
    uniform = np.linspace(freqs[0], freqs[-1], 128)
    resampled = np.stack([np.interp(uniform, freqs, frame) for frame in log_power])
    ceps = dct(resampled, type=2, axis=1, norm="ortho")[:, :n_ceps]
    return np.concatenate([ceps, np.gradient(ceps, axis=0)], 1)


FEATURES = {"lfcc": lfcc, "cqcc": cqcc}


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
    keep = int(cfg.max_seconds * RATE) or None
    return [(key, text, read_wav(folder / f"{key}.wav")[:keep]) for text, key in chosen]


def utterance_stats(frames: np.ndarray) -> np.ndarray:
    return np.concatenate([frames.mean(0), frames.std(0)])


class GMMDetector:
    """ASVspoof-style LFCC-GMM: one GMM on real frames, one on fake frames; score = mean log-likelihood ratio."""

    def __init__(self, components: int, seed: int):
        self.components, self.seed = components, seed

    def fit(self, frame_sets, y):
        from sklearn.mixture import GaussianMixture

        def gmm(sets):
            return GaussianMixture(self.components, covariance_type="diag", random_state=self.seed, max_iter=100).fit(np.concatenate(sets))

        self.real = gmm([f for f, t in zip(frame_sets, y) if t == 0])
        self.fake = gmm([f for f, t in zip(frame_sets, y) if t == 1])
        train = self.llr(frame_sets)
        self.threshold = float(np.median(train))  # balanced training set: the median splits it
        return self

    def llr(self, frame_sets):
        return np.array([self.fake.score(f) - self.real.score(f) for f in frame_sets])

    def score(self, frame_sets):
        return 1 / (1 + np.exp(-(self.llr(frame_sets) - self.threshold)))

    def save(self, folder: Path, name: str) -> str:
        return dump_joblib({"real": self.real, "fake": self.fake, "threshold": self.threshold}, folder, name)

    @classmethod
    def load(cls, folder: Path, name: str):
        det, state = cls(0, 0), load_joblib(folder, name)
        det.real, det.fake, det.threshold = state["real"], state["fake"], state["threshold"]
        return det


class CNNDetector:
    """A small CNN on 40x40 LFCC patches (40 frames = 0.4 s, 20 LFCC + 20 deltas); a clip's score is the mean
    over its patches. Features are standardised with the training frames' mean and std."""

    def __init__(self, epochs: int, seed: int, bar):
        self.epochs, self.seed, self.bar = epochs, seed, bar

    def crops(self, frames):
        f = (frames - self.mu) / self.sd
        if len(f) < 40:
            f = np.pad(f, ((0, 40 - len(f)), (0, 0)))
        return np.stack([f[i : i + 40] for i in range(0, len(f) - 39, 20)]).astype(np.float32)

    def fit(self, frame_sets, y):
        import torch

        from labcli.detect.vision import SmallCNN, train_model

        stacked = np.concatenate(frame_sets)
        self.mu, self.sd = stacked.mean(0), stacked.std(0) + 1e-6
        X, Y = [], []
        for f, t in zip(frame_sets, y):
            c = self.crops(f)
            X.append(c)
            Y += [t] * len(c)
        torch.manual_seed(self.seed)
        self.model = train_model(SmallCNN(classes=2, side=40), np.concatenate(X)[:, None], np.array(Y, dtype=np.int64),
                                 epochs=self.epochs, seed=self.seed, bar=self.bar, label="LFCC CNN")
        return self

    def score(self, frame_sets):
        import torch

        with torch.no_grad():
            return np.array([self.model(torch.from_numpy(self.crops(f)[:, None])).softmax(1)[:, 1].mean().item()
                             for f in frame_sets])

    def save(self, folder: Path, name: str) -> str:
        import torch

        path = folder / f"{name}.pt"
        state = {"state_dict": self.model.state_dict(), "mu": torch.from_numpy(self.mu), "sd": torch.from_numpy(self.sd)}
        runs.write_with(path, lambda tmp: torch.save(state, tmp))
        return path.name

    @classmethod
    def load(cls, folder: Path, name: str):
        import torch

        from labcli.detect.vision import SmallCNN

        state = torch.load(folder / f"{name}.pt", weights_only=True)
        det = cls(0, 0, None)
        det.mu, det.sd = state["mu"].numpy(), state["sd"].numpy()
        det.model = SmallCNN(classes=2, side=40)
        det.model.load_state_dict(state["state_dict"])
        det.model.eval()
        return det


class LogisticDetector:
    def fit(self, frame_sets, y):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(
            np.stack([utterance_stats(f) for f in frame_sets]), y)
        return self

    def score(self, frame_sets):
        return self.clf.predict_proba(np.stack([utterance_stats(f) for f in frame_sets]))[:, 1]

    def save(self, folder: Path, name: str) -> str:
        return dump_joblib(self.clf, folder, name)

    @classmethod
    def load(cls, folder: Path, name: str):
        det = cls()
        det.clf = load_joblib(folder, name)
        return det


def make_detector(name: str, cfg, bar):
    model = name.split("-", 1)[1]
    return (GMMDetector(cfg.gmm_components, cfg.seed) if model == "gmm" else
            CNNDetector(cfg.cnn_epochs, cfg.seed, bar) if model == "cnn" else LogisticDetector())


def load_detector(folder: Path, name: str, meta: dict):
    """A detector saved by save() (deepfake_store calls this)."""
    model = name.split("-", 1)[1]
    return (GMMDetector if model == "gmm" else CNNDetector if model == "cnn" else LogisticDetector).load(Path(folder), name)


def score(detectors: dict, x: np.ndarray, settings: dict | None = None) -> dict[str, float]:
    """P(fake) from each detector for one decoded clip, after the same cleaning the run used."""
    x, cache, out = clean(x), {}, {}
    for name, det in detectors.items():
        kind = name.split("-", 1)[0]
        if kind not in cache:
            cache[kind] = FEATURES[kind](x)
        out[name] = float(det.score([cache[kind]])[0])
    return out


def make_fake(kind: str, x: np.ndarray, text: str, cfg: Config, rng, workdir: Path, i: int) -> np.ndarray:
    if kind == "griffin-lim":
        return griffin_lim(x, cfg.griffin_lim_iters, rng)
    if kind == "mel-griffin-lim":
        return mel_griffin_lim(x, cfg.griffin_lim_iters, cfg.seed + i)
    if kind == "world":
        return world(x)
    if kind == "codec2":
        return codec2(x, cfg.codec2_mode, workdir)
    return espeak(text, workdir, i)


def check_tools(cfg: Config) -> None:
    kinds = cfg.train_fakes + cfg.heldout_fakes
    common.choose(kinds, FAKES, "fake type")
    common.choose(cfg.detectors, DETECTORS, "detector")
    if cfg.codec2_mode not in ("3200", "2400", "1600", "1400", "1300", "1200", "700C"):
        raise UserError(f"unknown codec2_mode '{cfg.codec2_mode}'", "choose from: 3200, 2400, 1600, 1400, 1300, 1200, 700C")
    for kind, tool in (("espeak", "espeak-ng"), ("codec2", "c2enc"), ("codec2", "c2dec")):
        if kind in kinds and shutil.which(tool) is None:
            raise UserError(f"{tool} is not installed (needed for the {kind} fakes)", SETUP)
    if "mel-griffin-lim" in kinds or any(d.startswith("cqcc") for d in cfg.detectors):
        try:
            import librosa  # noqa: F401
        except ImportError:
            raise UserError("librosa is not installed (mel Griffin-Lim fakes and CQCC features need it)", "pip install 'librosa>=0.10'") from None


def save_examples(ctx, prompts, clips, is_test, detectors) -> list[dict]:
    """The first test prompt as files (its real WAV, and each fake as 16-bit WAV) with the run's scores for them."""
    first = int(np.flatnonzero(is_test)[0])
    folder = ctx.dir / "examples"
    runs.write_bytes(folder / "real.wav", encode_wav(prompts[first][2]))
    files = [("real", folder / "real.wav")]
    for kind in clips:
        if kind != "real":
            runs.write_bytes(folder / f"fake-{kind}.wav", encode_wav(clips[kind][first]))
            files.append((kind, folder / f"fake-{kind}.wav"))
    return [{"file": str(f.relative_to(ctx.dir)), "truth": "real" if kind == "real" else "fake", "kind": kind,
             "scores": score(detectors, read_wav(f))} for kind, f in files]


def best_detector(rows: list[dict]) -> str:
    """The detector with the highest mean AUC on held-out fakes (all fakes if none are held out), clean audio."""
    pick = [r for r in rows if r["test condition"] == "clean" and r["seen in training"] == "held-out"] or \
        [r for r in rows if r["test condition"] == "clean"]
    names = list(dict.fromkeys(r["detector"] for r in pick))
    return max(names, key=lambda n: np.mean([r["auc"] for r in pick if r["detector"] == n]))


def run(cfg: Config, ctx) -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    check_tools(cfg)
    if cfg.score_file:
        read_wav(Path(cfg.score_file))  # fail early on an unreadable file
    seed_everything(cfg.seed)
    prompts = load_prompts(cfg)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(prompts))
    n_test = max(1, int(round(cfg.test_fraction * len(prompts))))
    is_test = np.zeros(len(prompts), dtype=bool)
    is_test[order[:n_test]] = True
    kinds = cfg.train_fakes + cfg.heldout_fakes
    feature_kinds = list(dict.fromkeys(d.split("-", 1)[0] for d in cfg.detectors))
    clips = {"real": [], **{k: [] for k in kinds}}
    with common.progress() as bar, tempfile.TemporaryDirectory() as tmp:
        task = bar.add_task(f"making fakes ({', '.join(kinds)})", total=len(prompts))
        for i, (_, text, x) in enumerate(prompts):
            clips["real"].append(clean(x))
            for k in kinds:
                clips[k].append(clean(make_fake(k, x, text, cfg, rng, Path(tmp), i)))
            bar.advance(task)
        task = bar.add_task(f"features ({', '.join(feature_kinds)}; clean and mu-law re-coded)", total=len(clips) * len(feature_kinds))
        frames, recoded = {}, {}
        for fk in feature_kinds:
            for k, v in clips.items():
                frames[fk, k] = [FEATURES[fk](c) for c in v]
                recoded[fk, k] = [FEATURES[fk](clean(mu_law(c))) for c in v]
                bar.advance(task)

        rows, detectors = [], {}
        for name in cfg.detectors:
            fk = name.split("-", 1)[0]
            real_train = [f for f, t in zip(frames[fk, "real"], is_test) if not t]
            train_sets, y_train = list(real_train), [0] * len(real_train)
            for k in cfg.train_fakes:
                extra = [f for f, t in zip(frames[fk, k], is_test) if not t]
                train_sets += extra
                y_train += [1] * len(extra)
            # balance real vs fake by repeating the real clips once per seen fake type
            reps = len(cfg.train_fakes) - 1
            train_sets += real_train * reps
            y_train += [0] * len(real_train) * reps
            det = detectors[name] = make_detector(name, cfg, bar).fit(train_sets, np.array(y_train))
            for k in kinds:
                for cond, source in (("clean", frames), ("mu-law re-coded", recoded)):
                    real_test = [f for f, t in zip(source[fk, "real"], is_test) if t]
                    fake_test = [f for f, t in zip(source[fk, k], is_test) if t]
                    y = np.r_[np.zeros(len(real_test)), np.ones(len(fake_test))]
                    p_fake = det.score(real_test + fake_test)
                    row = {"detector": name, "fake type": k, "seen in training": "seen" if k in cfg.train_fakes else "held-out",
                           "test condition": cond, "accuracy": accuracy_score(y, p_fake >= 0.5), "auc": roc_auc_score(y, p_fake),
                           "eer": common.equal_error_rate(y, p_fake)}
                    rows.append(row)
                    ctx.log(**row)
    best = best_detector(rows)
    deepfake_store.save(ctx.dir, "voice", detectors, best, {"rate": RATE, "features": feature_kinds, "threshold": 0.5})
    examples = save_examples(ctx, prompts, clips, is_test, detectors)
    scored = {"file": cfg.score_file, **score(detectors, read_wav(Path(cfg.score_file)))} if cfg.score_file else None
    fig, ax = common.new_figure()
    for k, v in clips.items():
        ax.plot(np.mean([f[:, :20].mean(0) for f in frames[feature_kinds[0], k]], 0), label=k, lw=2 if k == "real" else 1)
    ax.set_xlabel(f"{feature_kinds[0].upper()} index")
    ax.set_ylabel("mean value over clips")
    ax.legend()
    plot = common.save_figure(fig, ctx.path("cepstra_means.png"))
    ctx.write_summary({"prompts": len(prompts), "test_prompts": int(is_test.sum()), "results": rows, "best_detector": best,
                       "detector_dir": deepfake_store.FOLDER, "examples": examples, "scored_file": scored})
    ctx.write_report(
        f"# Synthetic-speech detection on Asterisk prompts\n\n{len(prompts)} real prompts (asterisk-core-sounds-en-wav, 8 kHz, "
        f"CC BY-SA 3.0); {int(is_test.sum())} prompts (by text) held out. Fakes made here: {', '.join(kinds)}; the "
        f"detectors train on {', '.join(cfg.train_fakes)} only. All clips silence-trimmed and normalised to -20 dBFS RMS. "
        f"Features: LFCC (linear filterbank, 10 ms frames) and CQCC-style (librosa constant-Q, 8 ms frames), + deltas.\n\n"
        f"{markdown_table(rows)}\n![cepstra]({plot})\n\n"
        f"Fitted detectors are in `{deepfake_store.FOLDER}/` (best on held-out fakes: `{best}`); serve them with "
        f"`lab serve detector --run {ctx.dir}`.\n\n"
        + (f"Scored file: `{scored}`\n\n" if scored else "")
        + "Reference: ASVspoof 2019 LA LFCC-GMM baseline EER 8.09 % (real attacks, 16 kHz); not comparable.\n\n"
        "## What this data is and is not\n\nReal speech of one studio voice, telephone band. The fakes are synthetic "
        "stand-ins (vocoder and codec resynthesis, espeak-ng TTS), not real-world voice-cloning deepfakes; espeak-ng is "
        "trivially detected and kept as the easy case. Not evidence of performance against neural TTS or voice conversion.\n")
    print(markdown_table(rows))
    print(f"detectors saved in {ctx.dir / deepfake_store.FOLDER} (best on held-out fakes: {best})")
    if scored:
        print(scored)
