"""labcli/detect/voice.py and voice_fakes.py: decoding with one-line errors, cleaning, features, mu-law."""

from __future__ import annotations

import numpy as np
import pytest

from labcli.detect import voice, voice_fakes
from labcli.errors import UserError


def tone(seconds: float = 0.5, rate: int = voice.RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t)


@pytest.mark.parametrize("data, message", [(b"", "is empty"), (b"RIFF\x00\x00\x00\x00WAVEjunk", "cannot read audio"),
                                           (voice.encode_wav(tone(0.05)), "shorter than 0.1 s")])
def test_decode_rejects_bad_audio_with_one_line(data, message):
    with pytest.raises(UserError, match=message):
        voice.decode(data, "file x.wav")


def test_wav_round_trip_and_resampling():
    x = tone()
    assert np.abs(voice.decode(voice.encode_wav(x)) - x).max() < 1e-4
    import io

    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, 16000, (tone(0.5, 16000) * 32767).astype(np.int16))
    assert len(voice.decode(buf.getvalue())) == 4000  # 16 kHz -> 8 kHz


def test_clean_trims_silence_and_normalises_loudness():
    x = np.r_[np.zeros(4000), tone(), np.zeros(4000)]
    y = voice.clean(x)
    assert len(y) < len(tone()) + 400 and abs(10 * np.log10((y**2).mean()) + 20) < 0.01


def test_lfcc_frames_and_mu_law_round_trip():
    x = tone()
    assert voice.lfcc(x).shape == (1 + (len(x) - 200) // 80, 40)
    assert np.abs(voice_fakes.mu_law(x) - x).max() < 0.02  # 8-bit companding error on a -10 dBFS tone
