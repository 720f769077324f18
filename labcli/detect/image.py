"""Images for the synthetic-image detectors: real patches, up-sampling-decoder fakes, spectral features, detectors.

Real: 32x32 grey patches of scikit-image's bundled photographs and its `lfw_subset` faces. Fakes (synthetic stand-ins,
not real-world deepfakes): the same patches through small autoencoders whose decoders up-sample with transposed
convolutions, nearest or bilinear interpolation, which leave GAN-like spectral traces. Detectors (fit on patches,
score -> P(fake) per patch, save/load into a detector folder): radial power spectrum + logistic regression (Durall et
al. 2020), log-DCT + logistic regression (Frank et al. 2020), and a small CNN. `decode` + `score` are what
`lab serve detector` runs for one file (P(fake) = mean over its 32x32 tiles), so a served score equals the run's.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from labcli import runs
from labcli.detect.deepfake_store import dump_joblib, load_joblib
from labcli.errors import UserError

FACES = "lfw-faces"  # scikit-image's lfw_subset: 100 Labeled Faces in the Wild crops (25x25), one more real source
PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "coins", "moon", "rocket", "brick", "grass", "gravel", "clock",
          "page", "text", FACES]
DECODERS = ["transposed", "nearest", "bilinear"]
DETECTORS = ["spectrum", "dct", "cnn"]
PATCH = 32
MAX_PIXELS = 4096 * 4096



def photo_patches(names: list[str], per_photo: int, seed: int):
    """(patches [N,32,32] in [0,1], source index per patch) from scikit-image's bundled photos."""
    import skimage.data
    from skimage.color import rgb2gray

    rng = np.random.default_rng(seed)
    out, src = [], []
    for i, name in enumerate(names):
        if name == FACES:
            tiles = lfw_faces()
        else:
            img = getattr(skimage.data, name)()
            img = rgb2gray(img[..., :3]) if img.ndim == 3 else img / 255.0
            h, w = (s // 32 * 32 for s in img.shape)
            tiles = img[:h, :w].reshape(h // 32, 32, w // 32, 32).swapaxes(1, 2).reshape(-1, 32, 32)
        tiles = tiles[tiles.std(axis=(1, 2)) > 0.01]  # flat background tiles carry no texture to judge
        pick = rng.permutation(len(tiles))[:per_photo]
        out.append(tiles[pick])
        src += [i] * len(pick)
    return np.concatenate(out).astype(np.float32), np.array(src)


def lfw_faces() -> np.ndarray:
    """The 100 face crops of scikit-image's lfw_subset (25x25 grey), resized to 32x32 with PIL's Lanczos filter.
    (The resize is itself an up-sampling, a real-world one: these real faces carry its smoothness.)"""
    import skimage.data
    from PIL import Image

    faces = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the last 100 are not
    return np.stack([np.asarray(Image.fromarray(f.astype(np.float32), mode="F").resize((PATCH, PATCH), Image.LANCZOS))
                     for f in faces]).clip(0, 1)


def make_autoencoder(decoder: str):
    from torch import nn

    enc = [nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()]
    if decoder == "transposed":
        dec = [nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(16, 1, 4, 2, 1)]
    else:
        up = lambda: nn.Upsample(scale_factor=2, mode=decoder)
        dec = [up(), nn.Conv2d(32, 16, 3, 1, 1), nn.ReLU(), up(), nn.Conv2d(16, 1, 3, 1, 1)]
    return nn.Sequential(*enc, *dec, nn.Sigmoid())


def make_fakes(decoder: str, train_real, all_real, epochs: int, seed: int, bar):
    """Train an autoencoder with this decoder on training patches; return its reconstructions of all_real."""
    import torch

    torch.manual_seed(seed)
    ae = make_autoencoder(decoder)
    opt = torch.optim.Adam(ae.parameters(), lr=2e-3)
    x = torch.from_numpy(train_real[:, None])
    task = bar.add_task(f"fake generator: {decoder} decoder", total=epochs)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            loss = ((ae(x[idx]) - x[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        bar.advance(task)
    with torch.no_grad():
        return ae(torch.from_numpy(all_real[:, None]))[:, 0].numpy()


def radial_spectrum(images: np.ndarray, bins: int = 16) -> np.ndarray:
    """Azimuthally averaged log power spectrum (Durall et al.), one row per image."""
    f = np.fft.fftshift(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True)), axes=(1, 2))
    power = np.log(np.abs(f) ** 2 + 1e-8)
    n = images.shape[1]
    yy, xx = np.indices((n, n)) - n // 2
    radius = np.sqrt(xx**2 + yy**2)
    ring = np.minimum((radius / radius.max() * bins).astype(int), bins - 1).ravel()
    flat = power.reshape(len(images), -1)
    counts = np.bincount(ring, minlength=bins)
    return np.stack([np.bincount(ring, weights=row, minlength=bins) / counts for row in flat])


def log_dct(images: np.ndarray) -> np.ndarray:
    """log |2-D DCT-II| coefficients (Frank et al.), flattened."""
    from scipy.fft import dctn

    return np.log(np.abs(dctn(images, axes=(1, 2), norm="ortho")) + 1e-6).reshape(len(images), -1)


def blur(images, sigma: float):
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(im, sigma) for im in images]).astype(np.float32)


def jpeg(images, quality: int):
    from PIL import Image

    out = []
    for im in images:
        buf = io.BytesIO()
        Image.fromarray((np.clip(im, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255.0)
    return np.stack(out)


class FeatureDetector:
    """Hand-made features + standardised logistic regression."""

    def __init__(self, kind: str):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.features = radial_spectrum if kind == "spectrum" else log_dct
        self.clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1 if kind == "dct" else 1.0, max_iter=3000))

    def fit(self, X, y):
        self.clf.fit(self.features(X), y)
        return self

    def score(self, X):
        return self.clf.predict_proba(self.features(X))[:, 1]

    def save(self, folder: Path, name: str) -> str:
        return dump_joblib(self.clf, folder, name)

    @classmethod
    def load(cls, folder: Path, name: str):
        det = cls(name)
        det.clf = load_joblib(folder, name)
        return det


class CNNDetector:
    """A small CNN on the pixels (binary: fake = 1)."""

    def __init__(self, epochs: int, seed: int, bar):
        self.epochs, self.seed, self.bar = epochs, seed, bar

    def fit(self, X, y):
        import torch

        from labcli.detect.vision import SmallCNN, train_model

        torch.manual_seed(self.seed)
        self.model = train_model(SmallCNN(classes=2, side=32), X[:, None].astype(np.float32), y.astype(np.int64),
                                 epochs=self.epochs, seed=self.seed, bar=self.bar, label="CNN detector")
        return self

    def score(self, X):
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(X[:, None].astype(np.float32))).softmax(1)[:, 1].numpy()

    def save(self, folder: Path, name: str) -> str:
        import torch

        path = folder / f"{name}.pt"
        runs.write_with(path, lambda tmp: torch.save(self.model.state_dict(), tmp))
        return path.name

    @classmethod
    def load(cls, folder: Path, name: str):
        import torch

        from labcli.detect.vision import SmallCNN

        det = cls(0, 0, None)
        det.model = SmallCNN(classes=2, side=PATCH)
        det.model.load_state_dict(torch.load(folder / f"{name}.pt", weights_only=True))
        det.model.eval()
        return det


def load_detector(folder: Path, name: str, meta: dict):
    """A detector saved by save() (deepfake_store calls this)."""
    return (CNNDetector if name == "cnn" else FeatureDetector).load(Path(folder), name)


def make_detector(name: str, *, cnn_epochs: int, seed: int, bar=None):
    """An unfitted detector for a name of DETECTORS."""
    return CNNDetector(cnn_epochs, seed, bar) if name == "cnn" else FeatureDetector(name)


def tiles_of(img: np.ndarray) -> np.ndarray:
    """Non-overlapping 32x32 tiles of a grey image; flat tiles are dropped unless nothing else is left."""
    h, w = (s // PATCH * PATCH for s in img.shape)
    tiles = img[:h, :w].reshape(h // PATCH, PATCH, w // PATCH, PATCH).swapaxes(1, 2).reshape(-1, PATCH, PATCH)
    textured = tiles[tiles.std(axis=(1, 2)) > 0.01]
    return (textured if len(textured) else tiles).astype(np.float32)


def decode(data: bytes, what: str = "request") -> np.ndarray:
    """An image file's bytes -> its 32x32 grey tiles in [0, 1] (as the run's patches); one-line UserError if unusable."""
    from PIL import Image

    if not data:
        raise UserError(f"image {what} is empty", "send an image file (PNG, JPEG, ...)")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise UserError(f"image {what} is {img.width}x{img.height}, more than {MAX_PIXELS} pixels", "send a smaller image")
        img.load()
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types (UnidentifiedImageError, OSError, SyntaxError, ...)
        raise UserError(f"cannot read image {what}: {str(exc).splitlines()[0][:100] if str(exc) else type(exc).__name__}",
                        "send an image file (PNG, JPEG, ...)") from None
    if min(img.size) < PATCH:
        raise UserError(f"image {what} is {img.width}x{img.height}; the detectors need at least {PATCH}x{PATCH}", "send a larger image")
    if img.mode == "L":
        grey = np.asarray(img, dtype=np.float64) / 255.0
    else:
        from skimage.color import rgb2gray

        grey = rgb2gray(np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0)  # the same grey as the training photos
    return tiles_of(grey)


def score(detectors: dict, tiles: np.ndarray, settings: dict | None = None) -> dict[str, float]:
    """P(fake) from each detector for one decoded image: the mean over its tiles."""
    return {name: float(np.mean(det.score(tiles))) for name, det in detectors.items()}


def read_image(path: Path) -> np.ndarray:
    """decode() of a file on disk."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read image file {path}: {exc.strerror}", "give an image file (PNG, JPEG, ...)") from None
    return decode(data, f"file {path}")


def encode_png(patch: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(patch, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
