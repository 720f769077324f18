"""A deepfake run's fitted detectors on disk, and scoring one file with them: what `lab serve detector` serves.

RUN/detector/ holds detector.json (which kind, the detectors, the one chosen on the validation split, feature
settings) and one file per detector: scikit-learn models as joblib, CNNs as a torch state_dict (.pt). Scoring a file
goes through the kind's library module (labcli.detect.voice or labcli.detect.image): its `decode` (bytes -> audio or
image tiles, one-line UserError for bad files) and `score` (the same feature extraction and classifiers the run
used), so a served score equals the run's score for the same file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from labcli import runs
from labcli.errors import UserError

FOLDER = "detector"
KINDS = ("voice", "image")


def dump_joblib(obj, folder: Path, name: str) -> str:
    """A fitted scikit-learn object (or a dict of arrays) as folder/<name>.joblib, atomically; returns the file name."""
    import joblib

    return runs.write_with(folder / f"{name}.joblib", lambda tmp: joblib.dump(obj, tmp)).name


def load_joblib(folder: Path, name: str):
    import joblib

    return joblib.load(folder / f"{name}.joblib")


def choose_best(validation_rows: list[dict]) -> str:
    """The detector with the highest mean AUC over its validation rows (ties: lower mean EER, then the first listed).
    Rows carry "detector", "auc", "eer" and must come from data that no reported (test) number uses."""
    names = list(dict.fromkeys(r["detector"] for r in validation_rows))
    mean = lambda name, key: float(np.mean([r[key] for r in validation_rows if r["detector"] == name]))  # noqa: E731
    return max(names, key=lambda name: (mean(name, "auc"), -mean(name, "eer"), -names.index(name)))


def save(run_dir: Path, kind: str, detectors: dict, best: str, settings: dict) -> Path:
    """Write every fitted detector (each has .save(folder, name)) and detector.json into RUN/detector/."""
    folder = Path(run_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: det.save(folder, name) for name, det in detectors.items()}
    runs.write_json(folder / "detector.json", {"kind": kind, "detectors": list(detectors), "best": best,
                                                 "files": files, "settings": settings})
    return folder


def load(folder: Path) -> tuple[dict, dict]:
    """(meta from detector.json, {name: fitted detector}) from a RUN/detector/ folder (or a TorchServe model dir)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "detector.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise UserError(f"{folder} holds no readable detector.json",
                        "serve a run made by `lab detect deepfake-voice` or `lab detect deepfake-image` (they save RUN/detector/)") from None
    kind = library(meta["kind"])
    return meta, {name: kind.load_detector(folder, name, meta) for name in meta["detectors"]}


def library(kind: str):
    """The library module that decodes and scores files of this kind."""
    if kind == "voice":
        from labcli.detect import voice

        return voice
    if kind == "image":
        from labcli.detect import image

        return image
    raise UserError(f"unknown detector kind '{kind}'", f"choose from: {', '.join(KINDS)}")


def score_bytes(meta: dict, detectors: dict, data: bytes, what: str = "request") -> dict[str, float]:
    """P(fake) from every detector for one file's bytes; UserError for a file that is not valid input."""
    kind = library(meta["kind"])
    return kind.score(detectors, kind.decode(data, what), meta["settings"])
