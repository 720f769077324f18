"""The synthetic voice fakes of `lab detect deepfake-voice` (stand-ins made here, not real-world deepfakes), and the
G.711 mu-law re-coding used as a robustness test. All work on mono float audio at 8 kHz."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from labcli.detect.voice import RATE, read_wav
from labcli.errors import UserError

FAKES = ["griffin-lim", "mel-griffin-lim", "world", "codec2", "espeak"]
CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200", "700C")


def griffin_lim(x: np.ndarray, iters: int, rng) -> np.ndarray:
    from scipy.signal import istft, stft

    _, _, spec = stft(x, fs=RATE, nperseg=256, noverlap=192)
    mag = np.abs(spec)
    phase = np.exp(2j * np.pi * rng.random(mag.shape))
    for _ in range(iters):
        _, y = istft(mag * phase, fs=RATE, nperseg=256, noverlap=192)
        _, _, s = stft(y, fs=RATE, nperseg=256, noverlap=192)
        phase = np.exp(1j * np.angle(s[:, : mag.shape[1]]))
    return istft(mag * phase, fs=RATE, nperseg=256, noverlap=192)[1][: len(x)]


def mel_griffin_lim(x: np.ndarray, iters: int, seed: int) -> np.ndarray:
    """40-band mel spectrogram (librosa) -> linear magnitude by the filterbank's pseudo-inverse (clipped at 0; librosa's
    NNLS inverse is ~20x slower for a similar result) -> Griffin-Lim phase (librosa)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=x, sr=RATE, n_fft=256, hop_length=64, n_mels=40, power=1.0)
    mag = np.maximum(np.linalg.pinv(librosa.filters.mel(sr=RATE, n_fft=256, n_mels=40)) @ mel, 0.0)
    return librosa.griffinlim(mag, n_iter=iters, hop_length=64, n_fft=256, length=len(x), random_state=seed)


def codec2(x: np.ndarray, mode: str, workdir: Path) -> np.ndarray:
    """Round trip through the Codec 2 speech codec (Debian `codec2`: c2enc/c2dec on raw 16-bit 8 kHz audio)."""
    raw, bits, out = workdir / "c2in.raw", workdir / "c2.bit", workdir / "c2out.raw"
    (np.clip(x / (np.abs(x).max() + 1e-12) * 0.9, -1, 1) * 32767).astype("<i2").tofile(raw)
    for cmd in (["c2enc", mode, str(raw), str(bits)], ["c2dec", mode, str(bits), str(out)]):
        subprocess.run(cmd, check=True, capture_output=True)
    y = np.fromfile(out, dtype="<i2").astype(np.float64) / 32768.0
    return np.pad(y, (0, max(0, len(x) - len(y))))[: len(x)]


def _pyworld():
    """pyworld's compiled WORLD bindings. pyworld 0.3.5's __init__ imports pkg_resources, which setuptools >= 81
    no longer ships, so on failure load the extension module file directly (same code, no package wrapper)."""
    try:
        import pyworld

        return pyworld
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise UserError("pyworld is not installed", "pip install 'pyworld>=0.3.4'") from None
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("pyworld")
    folder = Path(spec.submodule_search_locations[0])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        ext = folder / f"pyworld{suffix}"
        if ext.is_file():
            ext_spec = importlib.util.spec_from_file_location("pyworld.pyworld", ext)
            module = importlib.util.module_from_spec(ext_spec)
            ext_spec.loader.exec_module(module)
            return module
    raise UserError("pyworld's compiled module is missing", "pip install --force-reinstall 'pyworld>=0.3.4'")


def world(x: np.ndarray) -> np.ndarray:
    pyworld = _pyworld()
    x = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pyworld.dio(x, RATE)  # DIO + StoneMask: the fast F0 path (Harvest is ~10x slower)
    f0 = pyworld.stonemask(x, f0, t, RATE)
    sp, ap = pyworld.cheaptrick(x, f0, t, RATE), pyworld.d4c(x, f0, t, RATE)
    return pyworld.synthesize(f0, sp, ap, RATE)[: len(x)]


def espeak(text: str, workdir: Path, i: int) -> np.ndarray:
    out = workdir / f"tts{i}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(out), text], check=True, capture_output=True)
    return read_wav(out)


def mu_law(x: np.ndarray) -> np.ndarray:
    """G.711 mu-law 8-bit round trip (telephone re-coding)."""
    x = np.clip(x, -1, 1)
    code = np.round((np.sign(x) * np.log1p(255 * np.abs(x)) / np.log1p(255) + 1) / 2 * 255)
    y = code / 255 * 2 - 1
    return np.sign(y) * ((1 + 255) ** np.abs(y) - 1) / 255


def make_fake(kind: str, x: np.ndarray, text: str, *, griffin_lim_iters: int, codec2_mode: str, seed: int, rng,
              workdir: Path, i: int) -> np.ndarray:
    """The fake of kind (one of FAKES) for prompt i: audio x, transcript text; scratch files go in workdir."""
    if kind == "griffin-lim":
        return griffin_lim(x, griffin_lim_iters, rng)
    if kind == "mel-griffin-lim":
        return mel_griffin_lim(x, griffin_lim_iters, seed + i)
    if kind == "world":
        return world(x)
    if kind == "codec2":
        return codec2(x, codec2_mode, workdir)
    return espeak(text, workdir, i)
