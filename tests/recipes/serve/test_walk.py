"""Every `lab serve` example command as a user types it (issue 24's walk, serving part): the first line of each
serve recipe's YAML, run in the foreground from a scratch working directory with the default, relative run
folder (./runs) and no --run, so each builds or reuses its default prerequisite run (cached in the session's
LAB_HOME and shared with test_streamlit.py / test_browser.py / test_detector.py). Smoke-sized changes only: a free
port instead of the documented one, fewer timing repeats for `serve onnx`. Each must exit 0 after Ctrl-C,
print `run folder: runs/...`, answer one real request, and leave no process behind. TorchServe (`serve
torchserve`, `serve detector`) is started inside a relative run folder here: the case issue 24 found broken.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from labcli import registry, runs
from labcli.serving import process
from labcli.serving.clients import fetch_text, post
from labcli.serving.source import DEFAULT_DETECTOR_RUN, DEFAULT_TRANSLATION_RUN

pytestmark = pytest.mark.slow
PORTS = {"triton": 4, "torchserve": 5, "detector": 6, "streamlit": 1}
SMOKE = {"onnx": ["repeats=2"]}


def example(name: str) -> list[str]:
    """The example command of `lab serve NAME` (its YAML's first line) as arguments after `lab`."""
    (recipe,) = [r for r in registry.all_recipes() if r.verb == "serve" and r.name == name]
    words = shlex.split(recipe.command)
    assert words[:3] == ["lab", "serve", name] and "--run" not in words, recipe.command
    return words[1:]


@pytest.fixture(scope="module")
def walk(lab_home, tmp_path_factory):
    """Run each example from one scratch folder (relative ./runs); prerequisites are built first, once."""
    runs.prerequisite("finetune", "newari", DEFAULT_TRANSLATION_RUN, "no --run given: serving the default newari run")
    runs.prerequisite("detect", "deepfake-image", DEFAULT_DETECTOR_RUN, "no --run given: serving the default deepfake-image run")
    cwd = tmp_path_factory.mktemp("walk")
    env = {**os.environ, "LAB_HOME": str(lab_home), "PYTHONUNBUFFERED": "1"}
    env.pop("LAB_RUNS", None)
    return cwd, env


def serve(name: str, cwd: Path, env: dict) -> tuple[subprocess.Popen, str, int]:
    """Start the example in the foreground on a free port; (process, what it printed until serving, port)."""
    args = example(name)
    port = process.free_port_block(PORTS[name])
    if "--port" in args:
        args[args.index("--port") + 1] = str(port)
    else:
        args += ["--port", str(port)]
    proc = subprocess.Popen([sys.executable, "-m", "labcli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=cwd)
    lines = [proc.stdout.readline()]
    while lines[-1] and "press Ctrl-C" not in lines[-1]:
        lines.append(proc.stdout.readline())
    out = "".join(lines)
    if "press Ctrl-C" not in out:
        proc.wait(timeout=60)
        raise AssertionError(f"`lab {' '.join(args)}` did not start serving:\n{out[-4000:]}")
    return proc, out, port


def stop(proc: subprocess.Popen, out: str, name: str, port: int, lab_home: Path, cwd: Path) -> str:
    """Ctrl-C; exit 0, `run folder: runs/...` (relative, as the user's default), no process and no port left."""
    pgid = json.loads((lab_home / "serving" / "servers" / f"{name}-{port}.json").read_text())["pgid"]
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    out += rest
    assert proc.returncode == 0 and "no process left" in out, out[-3000:]
    folder = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("run folder: "))
    assert folder.startswith("runs/serve-") and (cwd / folder / "summary.json").is_file(), out[-3000:]
    assert process.group_pids(pgid) == [] and all(process.port_free(p) for p in range(port, port + PORTS[name]))
    return folder


def test_serve_onnx_example(walk):
    cwd, env = walk
    args = example("onnx") + SMOKE["onnx"]
    out = subprocess.run([sys.executable, "-m", "labcli", *args], capture_output=True, text=True, env=env, cwd=cwd,
                         timeout=900, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "no --run given: serving the default newari run" in out.stdout and "greedy text identical" in out.stdout
    folder = next(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("run folder: "))
    assert folder.startswith("runs/serve-onnx-") and (cwd / folder / "onnx" / "meta.json").is_file()  # in the serve run
    meta = json.loads((cwd / folder / "onnx" / "meta.json").read_text())
    evaluated = yaml.safe_load(Path(meta["decoding_source"]).read_text())["eval"]  # the run's config.yaml
    assert meta["no_repeat_ngram_size"] == evaluated.get("no_repeat_ngram_size", 0)  # decodes as the run's evaluation


def test_serve_triton_example(walk, lab_home):
    cwd, env = walk
    proc, out, port = serve("triton", cwd, env)
    try:
        summary_path = next(cwd.glob("runs/serve-triton-*/summary.json"))
        model = json.loads(summary_path.read_text())["models"]["text"]
        body = {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["How are you?"]}]}
        status, text = post(f"http://127.0.0.1:{port}/v2/models/{model}/infer", json.dumps(body).encode())
        assert status == 200 and json.loads(text)["outputs"][0]["name"] == "TEXT", text
        short = {"inputs": [{**body["inputs"][0], "shape": [2, 1]}]}  # the case: through the default front, a 400
        assert post(f"http://127.0.0.1:{port}/v2/models/{model}/infer", json.dumps(short).encode())[0] == 400
    finally:
        stop(proc, out, "triton", port, lab_home, cwd)


def test_serve_torchserve_example_in_a_relative_run_folder(walk, lab_home):
    cwd, env = walk
    proc, out, port = serve("torchserve", cwd, env)
    try:
        (serve_dir,) = list(cwd.glob("runs/serve-torchserve-*"))
        key = json.loads((serve_dir / "key_file.json").read_text())["inference"]["key"]
        model = json.loads((serve_dir / "summary.json").read_text())["model"]
        status, text = post(f"http://127.0.0.1:{port}/predictions/{model}", b'{"text": "How are you?"}',
                            {"Authorization": f"Bearer {key}"})
        assert status == 200 and isinstance(json.loads(text)["text"], str), text
    finally:
        stop(proc, out, "torchserve", port, lab_home, cwd)


def test_serve_detector_example_in_a_relative_run_folder(walk, lab_home):
    cwd, env = walk
    proc, out, port = serve("detector", cwd, env)
    try:
        (serve_dir,) = list(cwd.glob("runs/serve-detector-*"))
        summary = json.loads((serve_dir / "summary.json").read_text())
        key = json.loads((serve_dir / "key_file.json").read_text())["inference"]["key"]
        image = (Path(summary["run"]) / "examples" / "real.png").read_bytes()
        status, text = post(summary["endpoints"]["predict"], image,
                            {"Authorization": f"Bearer {key}", "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 200 and 0 <= json.loads(text)["score"] <= 1, text
    finally:
        stop(proc, out, "detector", port, lab_home, cwd)


def test_serve_streamlit_example(walk, lab_home):
    cwd, env = walk
    proc, out, port = serve("streamlit", cwd, env)
    try:
        assert fetch_text(f"http://127.0.0.1:{port}/_stcore/health") == "ok"
        assert "smoke" in out and "as the run's evaluation" in out
    finally:
        stop(proc, out, "streamlit", port, lab_home, cwd)
