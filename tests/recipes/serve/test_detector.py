"""`lab serve detector` end to end on the CPU: a tiny `lab detect deepfake-image` run served by a real TorchServe on
a free loopback port (one start for the whole file): served scores equal the run's own, bad files get a 400 and the
server keeps serving, `lab serve stop` leaves no process."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib" / "serving"))

from tiny_run import one_line_error

from labcli import runs
from labcli.recipes.serve.detector import post_file
from labcli.serving import process
from labcli.serving.clients import post
from labcli.serving.source import DEFAULT_DETECTOR_RUN

MAX_BYTES = 64 * 1024  # max_file_mb=0.0625


def lab(*args: str, env: dict, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "labcli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def served(tmp_path_factory, lab_home):
    """(tiny deepfake-image run folder, serve run folder, serve summary, inference key, env, cwd); stopped at the end."""
    cwd = tmp_path_factory.mktemp("detector")
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_RUNS": str(cwd / "runs")}
    run_dir = runs.prerequisite("detect", "deepfake-image", DEFAULT_DETECTOR_RUN, "the default detector run")
    port = process.free_port_block(5)
    out = lab("serve", "detector", "--run", str(run_dir), "--port", str(port), "--detach", f"max_file_mb={MAX_BYTES / 2**20}",
              env=env, cwd=cwd)
    (serve_dir,) = [p for p in (cwd / "runs").iterdir() if p.name.startswith("serve-detector")]
    summary = json.loads((serve_dir / "summary.json").read_text())
    key = json.loads((serve_dir / "key_file.json").read_text())["inference"]["key"]
    pgid = json.loads((lab_home / "serving" / "servers" / f"detector-{port}.json").read_text())["pgid"]
    try:
        yield run_dir, serve_dir, summary, key, env, cwd, out
    finally:
        lab("serve", "stop", "--name", f"detector-{port}", env=env, cwd=cwd, check=False)
        assert process.group_pids(pgid) == [], "server processes left behind"


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_served_scores_equal_the_runs(served):
    run_dir, _, summary, key, _, _, out = served
    run = json.loads((run_dir / "summary.json").read_text())
    props = (Path(summary["endpoints"]["key_file"]).parent / "config.properties").read_text()
    assert all(f"{k}=http://127.0.0.1:" in props for k in ("inference_address", "management_address", "metrics_address"))
    assert summary["token_auth"] and len(summary["smoke"]) == 4 and "matches the run" in out.stdout
    examples = {e["kind"]: e for e in run["examples"]}
    assert set(examples) == {"real", "transposed", "nearest", "bilinear"}
    for kind in ("real", "bilinear"):  # a real file and a (held-out) fake one
        status, answer = post_file(summary["endpoints"]["predict"], (run_dir / examples[kind]["file"]).read_bytes(), key)
        assert status == 200, answer
        assert set(answer["scores"]) == {"spectrum", "dct", "cnn"} and answer["detector"] == run["best_detector"]
        for name, value in examples[kind]["scores"].items():
            assert abs(answer["scores"][name] - value) <= 1e-6, (kind, name, answer["scores"][name], value)
        assert answer["score"] == answer["scores"][answer["detector"]]
        assert answer["label"] == ("fake" if answer["score"] >= 0.5 else "real")


@pytest.mark.slow
def test_bad_files_get_400_and_the_server_keeps_serving(served):
    _, _, summary, key, _, _, _ = served
    url = summary["endpoints"]["predict"]
    rng = np.random.default_rng(0)
    bad = {"empty": (b"", "empty"), "not an image": (b"RIFF\x00\x00\x00\x00WAVEjunk", "cannot read image"),
           "too small": (png(rng.integers(0, 255, (8, 8))), "at least 32x32"),
           "too large": (bytes(MAX_BYTES + 1), "too large")}
    for what, (body, message) in bad.items():
        status, answer = post_file(url, body, key)
        assert status == 400 and message in answer["error"], (what, status, answer)
    status, answer = post_file(url, png(rng.integers(0, 255, (64, 96, 3))), key)  # a colour image of 6 tiles
    assert status == 200 and 0 <= answer["score"] <= 1


@pytest.mark.slow
def test_any_content_type_is_read_as_the_file_and_a_missing_or_wrong_token_is_401(served):
    """Issue 24 item 8: curl's default form type, text/plain, image/png, or none at all: the body is the file
    (TorchServe alone answers a binary form body with 500 "Bad end of line"). No token or a wrong one: 401."""
    run_dir, _, summary, key, _, _, _ = served
    url, image = summary["endpoints"]["predict"], (run_dir / "examples" / "real.png").read_bytes()
    _, expected = post_file(url, image, key)
    for declared in ("application/x-www-form-urlencoded", "text/plain", "image/png", "application/json"):
        assert post_file(url, image, key, declared) == (200, expected), declared
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": key}):
        status, text = post(url, image, {"Content-Type": "image/png", **headers})
        assert status == 401 and "inference token" in json.loads(text)["error"], (headers, status, text)
    assert post_file(url, image, key) == (200, expected)


def test_serve_detector_one_line_errors(lab_main, tmp_path):
    for args, starts in ((["--run", str(tmp_path / "missing")], "run folder not found"),
                         (["--run", str(tmp_path)], f"{tmp_path} has no detector/detector.json")):
        one_line_error(lab_main("serve", "detector", *args), starts)
    assert not (tmp_path / "runs").exists()
