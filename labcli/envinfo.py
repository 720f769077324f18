"""`lab env`: versions, threads, devices, and which optional paths really work here."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import sys

PACKAGES = [
    "torch", "transformers", "tokenizers", "peft", "bitsandbytes", "accelerate", "datasets",
    "safetensors", "sacrebleu", "triton", "onnx", "onnxruntime", "onnxscript", "mujoco", "gymnasium",
    "minigrid", "stable-baselines3", "trl", "opacus", "adversarial-robustness-toolbox",
    "scikit-learn", "streamlit", "tritonclient", "torchserve", "tensorboard", "wandb",
    "typer", "rich", "pydantic", "numpy", "matplotlib",
]


def version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "-"


def _probe(code: str, timeout: int = 60) -> str:
    """Run a probe in a fresh interpreter so a crash or hang cannot take `lab env` down."""
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "no (probe timed out)"
    if out.returncode == 0:
        return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "yes"
    last = (out.stderr.strip().splitlines() or ["failed"])[-1]
    return f"no ({last[:100]})"


PROBES = {
    "bitsandbytes 4-bit (NF4)": (
        "import torch, bitsandbytes as bnb\n"
        "l = bnb.nn.Linear4bit(16, 16, quant_type='nf4', compress_statistics=True)\n"
        "l = l.to('cuda' if torch.cuda.is_available() else 'cpu')\n"
        "y = l(torch.randn(2, 16, device=l.weight.device)); print('yes, on', y.device)"
    ),
    "Triton interpreter": (
        "import os; os.environ['TRITON_INTERPRET']='1'\n"
        "import triton, triton.language as tl; print('yes, triton', triton.__version__)"
    ),
    "CUDA": "import torch; print(f'yes, {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else 'no (no CUDA device)')",
    "MuJoCo rendering (EGL)": (
        "import os; os.environ.setdefault('MUJOCO_GL','egl')\n"
        "import mujoco; m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\"1\"/></worldbody></mujoco>')\n"
        "r = mujoco.Renderer(m, 32, 32); d = mujoco.MjData(m); r.update_scene(d); r.render(); print('yes')"
    ),
}


def collect(short: bool = False) -> dict:
    import torch

    from labcli.runs import set_threads

    set_threads()

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch threads (intra/inter)": f"{torch.get_num_threads()}/{torch.get_num_interop_threads()}",
        "LAB_THREADS": os.environ.get("LAB_THREADS", "1 (default: one intra-op thread per process)"),
        "LAB_HOME": os.environ.get("LAB_HOME", "~/.cache/lab"),
        "offline (HF_HUB_OFFLINE)": os.environ.get("HF_HUB_OFFLINE", "0"),
        "devices": "cpu" + (f", cuda x{torch.cuda.device_count()}" if torch.cuda.is_available() else ""),
    }
    packages = {name: version(name) for name in PACKAGES}
    if short:
        packages = {k: v for k, v in packages.items() if v != "-"}
        return {"info": info, "packages": packages, "paths": {}}
    return {"info": info, "packages": packages, "paths": {k: _probe(v) for k, v in PROBES.items()}}


def print_env(short: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    data = collect(short)
    console = Console()
    for title, section in (("machine", data["info"]), ("packages", data["packages"]), ("optional paths", data["paths"])):
        if not section:
            continue
        table = Table(title=title, show_header=False)
        table.add_column(style="bold")
        table.add_column()
        for k, v in section.items():
            table.add_row(k, str(v))
        console.print(table)
