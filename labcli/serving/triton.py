"""Triton launchers: the environment, the model repository, the server process, its smoke test.

`lab serve triton` and `lab bench serve` both call these with explicit arguments. The repository
holds `<name>_text` (text in -> greedy text out) and `<name>_logits` (token ids in -> next-token
logits out), both Python-backend models running onnxruntime over a checked ONNX bundle, with
dynamic batching, max_batch_size and instance groups in config.pbtxt.

local: the tritonserver binary bundled in nvidia-pytriton (Triton 2.51, Python backend only), run
from its own numpy<2 environment (made by setup_triton_env.sh). Ports: `port` HTTP, port+1 gRPC,
port+2 metrics; with lab's HTTP front (gateway.py) the front takes `port` and Triton's own HTTP
listens on loopback port+3. docker: the NGC container over the same repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from labcli import runs
from labcli.errors import UserError
from labcli.serving import process
from labcli.serving.export import TOLERANCE, link_tree, read_json, read_sample

HERE = Path(__file__).parent
NGC_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the version nvidia-pytriton 0.7 bundles
SETUP = HERE / "setup_triton_env.sh"
SETUP_HINT = "run `make install` or `lab serve triton --setup` (labcli/serving/setup_triton_env.sh)"


@dataclass(frozen=True)
class ModelOptions:
    """What config.pbtxt says about batching and instances."""

    dynamic_batching: bool = True
    max_batch_size: int = 16
    queue_delay_us: int = 2000
    instances: int = 1
    threads: int = 1


# -- the environment --------------------------------------------------------------------------------

def triton_env() -> Path:
    """The numpy<2 environment: $LAB_TRITON_ENV, else <repo>/.venv-triton, else LAB_HOME/triton-env."""
    if os.environ.get("LAB_TRITON_ENV"):
        return Path(os.environ["LAB_TRITON_ENV"])
    repo = HERE.parent.parent
    if (repo / "pyproject.toml").is_file():
        return repo / ".venv-triton"
    from labcli.paths import lab_home

    return lab_home() / "triton-env"


def missing_system_python() -> str | None:
    """What the setup script would miss on this machine (python3.11, libpython3.11), or None."""
    python = os.environ.get("TRITON_PYTHON", "/usr/bin/python3.11")
    if not os.access(python, os.X_OK):
        return f"{python} (the Triton environment is built with Python 3.11)"
    lib = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout if shutil.which("ldconfig") else ""
    if lib and "libpython3.11.so.1.0" not in lib:
        return "libpython3.11.so.1.0 (the Triton Python-backend stub links it)"
    return None


def setup_env(env: Path) -> None:
    """Build the environment with setup_triton_env.sh; its one-line error becomes ours."""
    missing = missing_system_python()
    if missing:
        raise UserError(f"cannot build the Triton environment: {missing} is missing",
                        "apt-get install python3.11 python3.11-venv libpython3.11 (or set TRITON_PYTHON), then rerun with --setup")
    proc = subprocess.run(["bash", str(SETUP), str(env)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("error:")]
        raise UserError(f"building the Triton environment in {env} failed: "
                        f"{(lines or [(proc.stderr or proc.stdout).strip()[-200:]])[-1].removeprefix('error: ')}",
                        f"fix that and rerun with --setup; full log: {env / 'pip.log'}")


def tritonserver_paths(env: Path) -> tuple[Path, Path]:
    """(tritonserver binary, backend directory) inside the Triton environment, or one line saying what is missing."""
    root = env / "lib" / "python3.11" / "site-packages" / "pytriton" / "tritonserver"
    binary, backends = root / "bin" / "tritonserver", root / "backends"
    if binary.is_file() and (backends / "python" / "triton_python_backend_stub").is_file():
        return binary, backends
    missing = missing_system_python()
    if missing:
        raise UserError(f"no Triton server in {env}, and it cannot be built here: {missing} is missing",
                        f"apt-get install python3.11 python3.11-venv libpython3.11, then {SETUP_HINT}; "
                        "or use --launcher docker, or `lab serve torchserve`")
    raise UserError(f"no Triton server in {env} (the numpy<2 environment with nvidia-pytriton is not built)", SETUP_HINT)


# -- the model repository ---------------------------------------------------------------------------

def model_config(name: str, kind: str, task: str, vocab: int, options: ModelOptions) -> str:
    """config.pbtxt for one Python-backend model."""
    if kind == "text":
        io = ('input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
              'output [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]')
    else:
        names = ["input_ids", "attention_mask"] + (["decoder_input_ids"] if task == "seq2seq" else [])
        inputs = ",\n  ".join(f'{{ name: "{n}" data_type: TYPE_INT64 dims: [ -1 ] }}' for n in names)
        io = f'input [\n  {inputs}\n]\noutput [ {{ name: "logits" data_type: TYPE_FP32 dims: [ -1, {vocab} ] }} ]'
    batching = ""
    if options.dynamic_batching:
        batching = f"dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us} }}\n"
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: {options.max_batch_size}\n{io}\n{batching}'
            f"instance_group [ {{ count: {options.instances} kind: KIND_CPU }} ]\n"
            f'parameters [ {{ key: "kind" value: {{ string_value: "{kind}" }} }},\n'
            f'  {{ key: "threads" value: {{ string_value: "{options.threads}" }} }} ]\n')


def build_repository(bundle: Path, repo: Path, name: str, options: ModelOptions, suffix: str = "") -> dict[str, str]:
    """Write `<name>_text<suffix>` and `<name>_logits<suffix>` into `repo`; returns {kind: model name}."""
    meta = read_json(bundle / "meta.json")
    models = {}
    for kind in ("text", "logits"):
        model = f"{name}_{kind}{suffix}"
        version = repo / model / "1"
        link_tree(bundle, version / "bundle")
        shutil.copy2(HERE / "triton_model.py", version / "model.py")
        shutil.copy2(HERE / "greedy.py", version / "greedy.py")
        runs.write_text(repo / model / "config.pbtxt", model_config(model, kind, meta["task"], meta["vocab_size"], options))
        models[kind] = model
    return models


# -- the server process -----------------------------------------------------------------------------

def triton_http(host: str, port: int, gateway: bool) -> tuple[str, int]:
    """Where Triton's own HTTP listens: loopback port+3 behind the gateway, else host:port."""
    return (process.HOST, port + 3) if gateway else (host, port)


def ports(port: int, gateway: bool) -> list[int]:
    return [port, port + 1, port + 2] + ([port + 3] if gateway else [])


def local_command(binary: Path, backends: Path, repo: Path, host: str, port: int, http: tuple[str, int]) -> list[str]:
    return [str(binary), f"--model-repository={repo}", f"--backend-directory={backends}",
            f"--cache-directory={backends.parent / 'caches'}",
            f"--http-address={http[0]}", f"--http-port={http[1]}", f"--grpc-address={host}", f"--grpc-port={port + 1}",
            "--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={host}", f"--metrics-port={port + 2}",
            "--strict-readiness=true", "--exit-on-error=true", "--exit-timeout-secs=10", "--log-verbose=0"]


def local_env(env: Path) -> dict:
    """PATH starts with the numpy<2 environment (the stub imports numpy from the first python there)."""
    out = dict(os.environ)
    out["PATH"] = f"{env / 'bin'}:{out.get('PATH', '')}"
    out["VIRTUAL_ENV"] = str(env)
    out.pop("PYTHONPATH", None)
    out.pop("PYTHONHOME", None)
    return out


def docker_command(repo: Path, host: str, port: int, http: tuple[str, int]) -> list[str]:
    """The NGC container over the same repository; it adds what the Python-backend model imports."""
    inner = ("pip install -q 'numpy<2' onnxruntime-gpu tokenizers && "
             "tritonserver --model-repository=/models --strict-readiness=true --exit-on-error=true")
    return ["docker", "run", "--rm", "--gpus=all", "--shm-size=1g",
            "-p", f"{http[0]}:{http[1]}:8000", "-p", f"{host}:{port + 1}:8001", "-p", f"{host}:{port + 2}:8002",
            "-v", f"{repo.resolve()}:/models", NGC_IMAGE, "bash", "-c", inner]


def behind_gateway(server_cmd: list[str], host: str, port: int, gateway: bool) -> list[str]:
    """With the gateway, the front listens on host:port and runs the server as its child (one process group)."""
    if not gateway:
        return server_cmd
    up_host, up_port = triton_http(host, port, gateway)
    return [sys.executable, str(HERE / "gateway.py"), f"--listen={host}:{port}",
            f"--upstream={up_host}:{up_port}", "--", *server_cmd]


def endpoints(host: str, port: int, gateway: bool) -> dict:
    out = {"http": f"http://{host}:{port}", "grpc": f"{host}:{port + 1}", "metrics": f"http://{host}:{port + 2}/metrics"}
    if gateway:
        out["triton_http"] = "http://{}:{}".format(*triton_http(host, port, gateway))
    return out


def env_problem() -> str | None:
    """For `lab check`: why the local Triton server cannot start here ("WHAT (hint: FIX)"), or None."""
    try:
        tritonserver_paths(triton_env())
    except UserError as exc:
        return str(exc)
    return None


def prepare_local(setup: bool = False) -> tuple[Path, Path, Path]:
    """(environment, tritonserver binary, backend directory), building the environment first if `setup`."""
    env = triton_env()
    if setup:
        setup_env(env)
    return (env, *tritonserver_paths(env))


def start_triton(repo: Path, *, name: str, run_dir: Path, host: str = process.HOST, port: int = 8000,
                 gateway: bool = False, ready_timeout: float = 240.0, setup: bool = False):
    """Start the local server over `repo` as server `name` and wait until it and its models are ready.

    Returns (process, process.Server); the server log is run_dir/server.log."""
    env, binary, backends = prepare_local(setup)
    process.require_ports(ports(port, gateway), host)
    repo = repo.resolve()
    cmd = behind_gateway(local_command(binary, backends, repo, host, port, triton_http(host, port, gateway)), host, port, gateway)
    log = run_dir / "server.log"
    proc = process.start(cmd, log=log, env=local_env(env))
    server = process.Server(name=name, backend="triton", pid=proc.pid, pgid=proc.pid, endpoints=endpoints(host, port, gateway),
                            run_dir=str(run_dir), log=str(log))
    server.save()
    try:
        ready_s = process.wait_ready(proc, f"{server.endpoints['http']}/v2/health/ready", log, ready_timeout, "tritonserver",
                                     f"see {log}; rerun with --setup if the environment is broken")
    except BaseException:
        process.stop_server(server)
        raise
    server.endpoints["ready_s"] = round(ready_s, 2)
    server.save()
    return proc, server


def smoke_test(endpoints: dict, models: dict, bundle: Path) -> dict:
    """Text and logits over HTTP and gRPC, compared with the eager outputs saved at export time."""
    import numpy as np

    from labcli.serving import clients

    parity = read_json(bundle / "parity.json")
    sample = read_sample(bundle)
    text_in = parity["samples"][0]["input"]
    expected_text = parity["samples"][0]["eager"]
    out = {"input": text_in, "eager": expected_text}
    for protocol in ("http", "grpc"):
        client = clients.TritonClient(endpoints, protocol)
        got = client.text(models["text"], [text_in])[0]
        logits = client.logits(models["logits"], {k: v for k, v in sample.items() if k != "logits"})
        diff = float(np.abs(logits - sample["logits"]).max())
        out[protocol] = {"text": got, "text_match": got == expected_text, "logits_max_abs_diff": diff}
        client.close()
        if got != expected_text or diff > TOLERANCE:
            raise UserError(f"smoke test over {protocol}: served output differs from eager (text {got!r} vs {expected_text!r}, "
                            f"max |logits diff| {diff:.1e})", "see the server log in the run folder")
    return out


def batch_counts(metrics_url: str, model: str) -> dict[str, float]:
    """Triton's counters for `model`: inference_count (inputs served) and exec_count (model executions).

    exec_count < inference_count over a window means Triton formed batches of several inputs in it."""
    from labcli.serving.clients import fetch_text, prometheus_value

    text = fetch_text(metrics_url)
    return {key: prometheus_value(text, f"nv_{key}", model=model) for key in ("inference_count", "inference_exec_count")}
