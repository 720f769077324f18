"""Cluster job files that run a `lab` command on many nodes: SLURM, Kubernetes (Kubeflow), Ray.

`lab launch slurm|k8s|ray VERB RECIPE [overrides] --nodes N --gpus-per-node G` writes one file:

- slurm: an sbatch script; `srun` starts one `torchrun` per node, which meet at the first node
  through torchrun's c10d rendezvous (`--rdzv-backend c10d --rdzv-endpoint HEAD:PORT --rdzv-id JOB`);
- k8s: a Kubeflow Trainer `TrainJob` (trainer.kubeflow.org/v1alpha1) on the `torch-distributed`
  runtime, whose pods run `torchrun` (the runtime sets its node count, rank and rendezvous through
  the PET_* variables torchrun reads); with `--pytorchjob`, a Kubeflow Training Operator
  `PyTorchJob` (kubeflow.org/v1) instead: one Worker pod per node, an elastic policy with c10d
  rendezvous at worker 0 (the operator passes it to torchrun as PET_RDZV_*, PET_NNODES);
- ray: a Python entry point: Ray Train's `TorchTrainer` starts one worker per process (Ray Train 2.x
  reserves no CPU for its driver, so 2 workers of 1 CPU run on a 2-core machine; it forms the
  process group itself, a c10d TCP store at worker 0, and sets RANK/LOCAL_RANK/WORLD_SIZE), and each
  worker runs the same `lab` command in-process.

Every rank runs the exact same `lab VERB RECIPE ... --output RUN_DIR` line (RUN_DIR must be on a
shared filesystem for multi-node runs: every rank writes its RNG state there, rank 0 the rest).
`validate_*` check the files structurally without a cluster (bash's parser and sbatch's options;
the TrainJob's and PyTorchJob's typed API models; the Ray script compiles); the Ray file also runs for real here.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from labcli.errors import UserError

KINDS = ("slurm", "k8s", "ray")


@dataclass
class Job:
    verb: str
    recipe: str
    overrides: list[str]
    nodes: int = 1
    gpus_per_node: int = 1
    run_dir: str = ""  # shared folder for the run; default runs/VERB-RECIPE-JOB
    name: str = ""
    image: str = "python:3.11"  # k8s: a container image with lab installed
    partition: str = ""  # slurm
    time: str = "24:00:00"  # slurm
    port: int = 29500  # rendezvous port on the first node
    cpus_per_task: int = 0  # slurm/ray: CPUs per process (0: leave to the cluster)
    use_gpu: bool = True  # ray: ask for GPUs; k8s/slurm: request nvidia.com/gpu / --gpus-per-node
    pytorchjob: bool = False  # k8s: a Kubeflow Training Operator v1 PyTorchJob instead of a TrainJob
    env: dict = field(default_factory=dict)

    @property
    def job_name(self) -> str:
        return self.name or f"lab-{self.verb}-{self.recipe}".replace("_", "-").lower()[:50]

    def lab_args(self, run_dir: str) -> list[str]:
        return [self.verb, self.recipe, *self.overrides, "--output", run_dir]


def torchrun(job: Job, head: str, run_id: str, node_rank: str | None = None) -> list[str]:
    """torchrun with c10d rendezvous at head:port, one agent per node."""
    cmd = ["torchrun", f"--nnodes={job.nodes}", f"--nproc-per-node={job.gpus_per_node}", "--rdzv-backend=c10d",
           f"--rdzv-endpoint={head}:{job.port}", f"--rdzv-id={run_id}"]
    if node_rank is not None:
        cmd.append(f"--node-rank={node_rank}")
    return cmd + ["-m", "labcli"]


def slurm(job: Job) -> str:
    run_dir = job.run_dir or f"runs/{job.verb}-{job.recipe}-${{SLURM_JOB_ID}}"
    directives = [f"--job-name={job.job_name}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
                  f"--time={job.time}", "--output=%x-%j.out"]
    if job.use_gpu:
        directives.append(f"--gpus-per-node={job.gpus_per_node}")
    if job.cpus_per_task:
        directives.append(f"--cpus-per-task={job.cpus_per_task * job.gpus_per_node}")
    if job.partition:
        directives.append(f"--partition={job.partition}")
    lab = " ".join(shlex.quote(a) for a in job.lab_args("RUN_DIR_PLACEHOLDER")).replace("RUN_DIR_PLACEHOLDER", '"$RUN_DIR"')
    launcher = " ".join(torchrun(job, "$HEAD", "$SLURM_JOB_ID"))
    env = "".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in job.env.items())
    return (
        "#!/bin/bash\n"
        + "".join(f"#SBATCH {d}\n" for d in directives)
        + f"# {job.nodes} node(s) x {job.gpus_per_node} process(es): lab {job.verb} {job.recipe} under torchrun (c10d rendezvous)\n"
        "set -euo pipefail\n"
        "HEAD=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\n"
        f"RUN_DIR={shlex.quote(run_dir) if job.run_dir else run_dir}\n"
        f"export LAB_EXPECTED_WORLD_SIZE={job.nodes * job.gpus_per_node}\n"
        + env
        + f"srun --nodes={job.nodes} --ntasks-per-node=1 {launcher} {lab}\n"
    )


def k8s(job: Job) -> dict:
    """A Kubeflow Trainer v2 TrainJob on the `torch-distributed` runtime."""
    run_dir = job.run_dir or f"/workspace/runs/{job.verb}-{job.recipe}"
    command = ["torchrun", "-m", "labcli", *job.lab_args(run_dir)]  # nodes, ranks, rendezvous: PET_* from the runtime
    trainer = {"image": job.image, "command": command, "numNodes": job.nodes, "numProcPerNode": job.gpus_per_node,
               "env": [{"name": "LAB_EXPECTED_WORLD_SIZE", "value": str(job.nodes * job.gpus_per_node)},
                       *({"name": k, "value": str(v)} for k, v in job.env.items())]}
    if job.use_gpu:
        trainer["resourcesPerNode"] = {"limits": {"nvidia.com/gpu": str(job.gpus_per_node)}}
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": job.job_name}, "spec": {"runtimeRef": {"name": "torch-distributed"}, "trainer": trainer}}


def pytorchjob(job: Job) -> dict:
    """A Kubeflow Training Operator v1 PyTorchJob: Worker pods only, elastic policy with c10d rendezvous."""
    run_dir = job.run_dir or f"/workspace/runs/{job.verb}-{job.recipe}"
    container = {"name": "pytorch",  # the operator finds its container by this name
                 "image": job.image, "command": ["torchrun", "-m", "labcli", *job.lab_args(run_dir)],
                 "env": [{"name": "LAB_EXPECTED_WORLD_SIZE", "value": str(job.nodes * job.gpus_per_node)},
                         *({"name": k, "value": str(v)} for k, v in job.env.items())]}
    if job.use_gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(job.gpus_per_node)}}
    worker = {"replicas": job.nodes, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [container]}}}
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": job.job_name},
            "spec": {"nprocPerNode": str(job.gpus_per_node),
                     "elasticPolicy": {"rdzvBackend": "c10d", "minReplicas": job.nodes, "maxReplicas": job.nodes,
                                       "maxRestarts": 3},
                     "runPolicy": {"cleanPodPolicy": "Running"},  # stop what still runs at the end, keep logs
                     "pytorchReplicaSpecs": {"Worker": worker}}}


RAY_TEMPLATE = '''"""Ray Train entry point written by `lab launch ray`: {n} worker(s) run `lab {verb} {recipe}`.

    python {file}                  # on a Ray cluster's head node (or locally: starts a local Ray)

TorchTrainer starts one worker per process and forms their torch.distributed process group (a c10d
TCP store at worker 0); each worker then runs the same lab command in-process, which finds the
group already initialized and RANK/LOCAL_RANK/WORLD_SIZE set.
"""

import os
import sys

import ray
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

LAB_ARGS = {args!r}
WORKERS = {n}
USE_GPU = {use_gpu!r}


def train_loop_per_worker(config):
    from labcli.cli import main

    os.environ["LAB_EXPECTED_WORLD_SIZE"] = str(WORKERS)
    sys.argv = ["lab", *LAB_ARGS]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise RuntimeError(f"lab exited with {{exc.code}}") from None


if __name__ == "__main__":
    ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False)
    trainer = TorchTrainer(
        train_loop_per_worker,
        scaling_config=ScalingConfig(num_workers=WORKERS, use_gpu=USE_GPU,
                                     resources_per_worker={resources!r}),  # Ray Train 2.x's driver reserves no CPU
        torch_config=TorchConfig(backend="nccl" if USE_GPU else "gloo"),
        run_config=RunConfig(name={name!r}, storage_path=os.path.abspath({storage!r})),
    )
    result = trainer.fit()
    print("ray train finished:", result.error or "ok")
'''


def ray(job: Job, file: str) -> str:
    run_dir = str(Path(job.run_dir or f"runs/{job.verb}-{job.recipe}-ray").resolve())
    workers = job.nodes * job.gpus_per_node
    resources = {"CPU": job.cpus_per_task or 1} | ({"GPU": 1} if job.use_gpu else {})
    return RAY_TEMPLATE.format(n=workers, verb=job.verb, recipe=job.recipe, file=Path(file).name,
                               args=job.lab_args(run_dir), use_gpu=job.use_gpu, resources=resources,
                               name=job.job_name, storage=str(Path(run_dir).parent / "ray"))


def write_job(kind: str, job: Job, out: Path | None = None) -> Path:
    """Write the job file for `kind` (validated first); returns its path."""
    from labcli import runs

    if kind not in KINDS:
        raise UserError(f"unknown launcher '{kind}'", f"one of: {', '.join(KINDS)}")
    if job.nodes < 1 or job.gpus_per_node < 1:
        raise UserError("--nodes and --gpus-per-node must be at least 1", "e.g. --nodes 2 --gpus-per-node 8")
    default = {"slurm": f"{job.job_name}.sbatch", "k8s": f"{job.job_name}.yaml", "ray": f"{job.job_name.replace('-', '_')}_ray.py"}
    path = Path(out or default[kind])
    if kind == "slurm":
        text = slurm(job)
        validate_slurm(text)
    elif kind == "k8s":
        import yaml

        manifest = pytorchjob(job) if job.pytorchjob else k8s(job)
        (validate_pytorchjob if job.pytorchjob else validate_k8s)(manifest)
        text = yaml.safe_dump(manifest, sort_keys=False)
    else:
        text = ray(job, str(path))
        validate_python(text)
    runs.write_text(path, text)
    return path


SBATCH_OPTIONS = {"job-name", "nodes", "ntasks-per-node", "time", "output", "gpus-per-node", "cpus-per-task", "partition"}


def validate_slurm(text: str) -> None:
    """bash's parser accepts it (`bash -n`); #SBATCH lines come first and use sbatch's long options."""
    proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ValueError(f"sbatch script does not parse: {proc.stderr.strip()}")
    lines = text.splitlines()
    if lines[0] != "#!/bin/bash":
        raise ValueError("sbatch script needs a #!/bin/bash first line")
    body = [i for i, line in enumerate(lines) if line and not line.startswith("#")]
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    if body and directives and max(directives) > body[0]:
        raise ValueError("an #SBATCH line after the first command is ignored by sbatch")
    for i in directives:
        option = lines[i].split()[1]
        if not option.startswith("--") or option[2:].split("=")[0] not in SBATCH_OPTIONS or "=" not in option:
            raise ValueError(f"unexpected sbatch option {option}")


def validate_k8s(manifest: dict) -> None:
    """The manifest round-trips through Kubeflow Trainer's typed API models unchanged: every key is
    known to the TrainJob schema and every value has its type (needs kubeflow-trainer-api)."""
    try:
        from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob
    except ImportError:
        raise UserError("validating a TrainJob needs kubeflow-trainer-api", "pip install 'labcli[cluster]'") from None
    model = TrainerV1alpha1TrainJob.from_dict(json.loads(json.dumps(manifest)))
    if model.to_dict() != manifest:
        raise ValueError(f"TrainJob fields unknown to the schema: {model.to_dict()} != {manifest}")


def validate_pytorchjob(manifest: dict) -> None:
    """The manifest round-trips through the Training Operator's typed models (kubeflow-training,
    with the Kubernetes pod template models) unchanged: every key known, every value of its type."""
    try:
        from kubeflow.training.api_client import ApiClient
    except ImportError:
        raise UserError("validating a PyTorchJob needs kubeflow-training", "pip install 'labcli[cluster]'") from None
    client = ApiClient()
    model = client._ApiClient__deserialize(json.loads(json.dumps(manifest)), "KubeflowOrgV1PyTorchJob")
    if client.sanitize_for_serialization(model) != manifest:
        raise ValueError(f"PyTorchJob fields unknown to the schema: {client.sanitize_for_serialization(model)} != {manifest}")


def validate_python(text: str) -> None:
    compile(text, "<ray entry point>", "exec")
