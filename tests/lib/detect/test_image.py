"""labcli/detect/image.py: decoding files into tiles with one-line errors, and the spectral features."""

from __future__ import annotations

import io

import numpy as np
import pytest

from labcli.detect import image
from labcli.errors import UserError


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("data, message", [(b"", "is empty"), (b"\x89PNG\r\n\x1a\nnot really", "cannot read image"),
                                           (png(np.zeros((20, 20))), "at least 32x32")])
def test_decode_rejects_bad_images_with_one_line(data, message):
    with pytest.raises(UserError, match=message):
        image.decode(data, "file x.png")


def test_decode_tiles_a_photo_and_drops_flat_tiles():
    rng = np.random.default_rng(0)
    photo = np.zeros((64, 96))
    photo[:32] = rng.integers(0, 256, size=(32, 96))  # top row of tiles textured, bottom row flat
    tiles = image.decode(png(photo))
    assert tiles.shape == (3, 32, 32) and tiles.dtype == np.float32 and 0 <= tiles.min() and tiles.max() <= 1


def test_radial_spectrum_sees_up_sampling():
    rng = np.random.default_rng(0)
    noise = rng.random((8, 32, 32))
    upsampled = np.stack([np.kron(n[::2, ::2], np.ones((2, 2))) for n in noise])
    real, fake = image.radial_spectrum(noise), image.radial_spectrum(upsampled)
    assert real.shape == (8, 16) and fake[:, -4:].mean() < real[:, -4:].mean() - 1  # high frequencies lost
