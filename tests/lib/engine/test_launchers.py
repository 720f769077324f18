"""Cluster job files: written by `lab launch`, validated structurally (SLURM, Kubernetes TrainJob and
PyTorchJob), and (slow) Ray Train for real with 2 workers and two torchrun "nodes" over loopback,
both matching one process on the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

from labcli.engine.launchers import Job, k8s, pytorchjob, slurm, validate_k8s, validate_pytorchjob, validate_slurm, write_job


def test_lab_launch_writes_each_kind(lab_main, tmp_path):
    for kind in ("slurm", "k8s", "ray"):
        out = tmp_path / f"job-{kind}"
        r = lab_main("launch", kind, "finetune", "tiny-lm", "--nodes", "2", "--gpus-per-node", "8",
                     "train.max_steps=10", "--out", str(out))
        assert r.returncode == 0, r.stderr
    script = (tmp_path / "job-slurm").read_text()
    assert "#SBATCH --nodes=2" in script and "srun --nodes=2 --ntasks-per-node=1 torchrun --nnodes=2" in script
    assert "--rdzv-backend=c10d --rdzv-endpoint=$HEAD:29500" in script and "finetune tiny-lm train.max_steps=10" in script
    manifest = yaml.safe_load((tmp_path / "job-k8s").read_text())
    assert manifest["kind"] == "TrainJob" and manifest["spec"]["trainer"]["numNodes"] == 2
    assert manifest["spec"]["trainer"]["command"][:3] == ["torchrun", "-m", "labcli"]
    assert "TorchTrainer" in (tmp_path / "job-ray").read_text()
    r = lab_main("launch", "k8s", "finetune", "tiny-lm", "--nodes", "2", "--gpus-per-node", "8", "--pytorchjob",
                 "--out", str(tmp_path / "job-pytorchjob"))
    assert r.returncode == 0, r.stderr
    manifest = yaml.safe_load((tmp_path / "job-pytorchjob").read_text())
    assert manifest["kind"] == "PyTorchJob" and manifest["spec"]["elasticPolicy"]["rdzvBackend"] == "c10d"
    assert manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2 and manifest["spec"]["nprocPerNode"] == "8"


def test_bad_launches_are_one_line_errors(lab_main, tmp_path):
    r = lab_main("launch", "pbs", "finetune", "tiny-lm", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.startswith("error: unknown launcher 'pbs'") and not (tmp_path / "x").exists()
    r = lab_main("launch", "slurm", "finetune", "tiny-lm", "train.nope=1")
    assert r.returncode == 2 and "train.nope" in r.stderr
    r = lab_main("launch", "ray", "finetune", "tiny-lm", "--pytorchjob", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "--pytorchjob" in r.stderr and not (tmp_path / "y").exists()


def test_validators_catch_broken_files():
    job = Job("finetune", "tiny-lm", [], nodes=2, gpus_per_node=4)
    validate_slurm(slurm(job))
    with pytest.raises(ValueError):
        validate_slurm(slurm(job).replace("set -euo pipefail", "if then fi"))
    with pytest.raises(ValueError):
        validate_slurm(slurm(job) + "#SBATCH --nodes=3\n")
    manifest = k8s(job)
    validate_k8s(manifest)
    manifest["spec"]["trainer"]["numNode"] = 2  # a typo the cluster would silently drop
    with pytest.raises(ValueError):
        validate_k8s(manifest)
    manifest = k8s(job)
    manifest["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(Exception):
        validate_k8s(manifest)


def test_pytorchjob_validator_catches_broken_manifests():
    pytest.importorskip("kubeflow.training", reason="needs kubeflow-training (pip install 'labcli[cluster]')")
    job = Job("finetune", "tiny-lm", [], nodes=2, gpus_per_node=4)
    validate_pytorchjob(pytorchjob(job))
    broken = pytorchjob(job)
    broken["spec"]["elasticPolicy"]["rdzvBackends"] = "c10d"  # a typo the operator would drop
    with pytest.raises(ValueError):
        validate_pytorchjob(broken)
    broken = pytorchjob(job)
    broken["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["comand"] = ["torchrun"]
    with pytest.raises(ValueError):  # pod-template fields are typed too (Kubernetes' own models)
        validate_pytorchjob(broken)
    broken = pytorchjob(job)
    broken["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "two"
    with pytest.raises(ValueError):
        validate_pytorchjob(broken)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY = ["finetune", "tiny-lm", "train.eval_every=0", "train.tensorboard=false", "vocab_size=500", "train.max_steps=3",
        "train.batch_size=8", "train.save_every=0"]


def summary(path):
    return json.loads((path / "summary.json").read_text())


@pytest.fixture(scope="module")
def one_process(lab_home, tmp_path_factory):
    """The reference: one process, the whole global batch of 8 in one micro-batch."""
    out = tmp_path_factory.mktemp("one") / "run"
    proc = subprocess.run([sys.executable, "-m", "labcli", *TINY, "train.micro_batch_size=8", "--output", str(out)],
                          env={**os.environ, "LAB_HOME": str(lab_home)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return summary(out)


@pytest.mark.slow
def test_two_torchrun_nodes_over_loopback_match_one_process(one_process, lab_home, tmp_path):
    """Two torchrun agents (--nnodes 2, one process each) meet by c10d rendezvous on 127.0.0.1."""
    two = tmp_path / "two"
    port = free_port()
    env = {**os.environ, "LAB_HOME": str(lab_home), "LAB_EXPECTED_WORLD_SIZE": "2"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=loopback", "-m", "labcli", *TINY,
           "train.micro_batch_size=4", "train.strategy=ddp", "--output", str(two)]
    agents = [subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for _ in range(2)]
    logs = [a.communicate(timeout=600)[0] for a in agents]
    assert all(a.returncode == 0 for a in agents), logs[0][-2000:] + logs[1][-2000:]
    assert summary(two)["final_loss"] == pytest.approx(one_process["final_loss"], rel=1e-5, abs=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LAB_TEST_RAY"), reason="a local Ray cluster with 2 workers takes ~140 s on "
                    "2 busy cores (over the slow tier's budget); LAB_TEST_RAY=1 runs it")
def test_ray_train_runs_the_recipe_with_two_workers(one_process, lab_home, tmp_path):
    """`lab launch ray`'s entry point on a local Ray: 2 workers of 1 CPU each (DDP, 4 examples each)."""
    pytest.importorskip("ray", reason="needs ray[train] (pip install 'labcli[cluster]')")
    run_dir = tmp_path / "ray-run"
    path = write_job("ray", Job("finetune", "tiny-lm", TINY[2:] + ["train.micro_batch_size=4"], nodes=1,
                                gpus_per_node=2, run_dir=str(run_dir), use_gpu=False), tmp_path / "entry.py")
    env = {**os.environ, "LAB_HOME": str(lab_home), "RAY_ADDRESS": "local", "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.run([sys.executable, str(path)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    s = summary(run_dir)
    assert s["steps"] == 3 and s["final_loss"] == pytest.approx(one_process["final_loss"], rel=1e-5, abs=1e-5)
