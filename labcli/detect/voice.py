"""Audio for the voice deepfake detectors: decoding, cleaning, LFCC / CQCC-style features, the three detector kinds.

Everything works on mono float audio at 8 kHz (RATE). `decode` turns a WAV file's bytes into audio with one-line
UserErrors; `clean` trims silence and normalises loudness so length and level are no shortcut. Detectors (fit on
lists of per-frame feature matrices, score -> P(fake) per clip, save/load into a detector folder):
utterance statistics + logistic regression, the ASVspoof-style GMM log-likelihood ratio, and a small CNN on
40-frame patches. `score` is what `lab serve detector` runs for one file, so a served score equals the run's.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from labcli import runs
from labcli.detect.deepfake_store import dump_joblib, load_joblib
from labcli.errors import UserError

RATE = 8000
DETECTORS = ["lfcc-logistic", "lfcc-gmm", "lfcc-cnn", "cqcc-logistic", "cqcc-gmm", "cqcc-cnn"]


def decode(data: bytes, what: str = "request") -> np.ndarray:
    """A PCM WAV file's bytes -> mono float audio at 8 kHz; one-line UserError for anything that is not usable audio."""
    from scipy.io import wavfile

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

        from scipy.signal import resample_poly

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


def make_detector(name: str, *, gmm_components: int, cnn_epochs: int, seed: int, bar=None):
    """An unfitted detector for a name of DETECTORS (feature kind - model kind)."""
    model = name.split("-", 1)[1]
    return (GMMDetector(gmm_components, seed) if model == "gmm" else
            CNNDetector(cnn_epochs, seed, bar) if model == "cnn" else LogisticDetector())


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


