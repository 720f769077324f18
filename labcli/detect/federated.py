"""Federated learning with Flower (`flwr`, its Message API and `flwr.simulation.run_simulation`) for `lab detect federated`.

- `partition`: IID shards or Dirichlet(alpha) label skew per client (Hsu et al. 2019).
- `local_update`: what one client does in a round: SGD epochs on its shard, optionally with FedProx's proximal term
  (Li et al. 2020); a malicious client poisons its labels (source -> target class) and/or scales its update
  (model-replacement boosting, Bhagoji et al. 2019) or flips its sign.
- `simulate`: one federated run with one of Flower's strategies (FedAvg, FedProx, Krum, FedTrimmedAvg, FedMedian, or
  FedAvg under `DifferentialPrivacyServerSideFixedClipping` with Flower's RDP accountant), evaluating the global model
  centrally on held-out images after every round. The clients run in Flower's Ray simulation backend.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from labcli.detect.vision import SmallCNN, batches, predict

WIDTH = 8  # conv8-conv16-fc128-fc10: small enough that 10 clients x many rounds fit on a 2-core CPU


def new_model(seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN(width=WIDTH)


def partition(y: np.ndarray, clients: int, alpha: float | None, seed: int, min_size: int = 10,
              attempts: int = 1000) -> list[np.ndarray]:
    """Indices per client. alpha=None: a random equal split (IID). Otherwise per class, the class's images are split
    across clients in proportions drawn from Dirichlet(alpha) (small alpha = each client sees few classes); redrawn
    until every client has min_size images."""
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), clients)]
    for _ in range(attempts):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet([alpha] * clients)) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k] += chunk.tolist()
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p)) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gives every one of {clients} clients {min_size} images")


@dataclass
class Attack:
    """What malicious clients do. kind: 'label-flip' (relabel `source` images as `target`, then scale the update by
    `boost`) or 'sign-flip' (send minus `boost` x the honest update: an untargeted Byzantine update)."""
    kind: str = "none"
    clients: list[int] = field(default_factory=list)
    boost: float = 1.0
    source: int = 7
    target: int = 1


@dataclass
class LocalConfig:
    epochs: int = 1
    lr: float = 0.05
    batch_size: int = 32
    fedsgd: bool = False  # one full-batch gradient step instead of local epochs (McMahan et al.'s FedSGD)


def local_update(global_state: dict, X: np.ndarray, y: np.ndarray, local: LocalConfig, proximal_mu: float, seed: int,
                 attack: Attack | None = None) -> dict:
    """One client's round: start from the global weights, train on (X, y), return the new weights."""
    model = SmallCNN(width=WIDTH)
    model.load_state_dict(global_state)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    X, y = torch.as_tensor(X), torch.as_tensor(y).clone()
    if attack and attack.kind == "label-flip":
        y[y == attack.source] = attack.target
    opt = torch.optim.SGD(model.parameters(), lr=local.lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    steps = [torch.arange(len(X))] if local.fedsgd else [i for _ in range(local.epochs) for i in batches(len(X), local.batch_size, gen)]
    for idx in steps:
        loss = F.cross_entropy(model(X[idx]), y[idx])
        if proximal_mu > 0:  # FedProx: mu/2 ||w - w_global||^2 keeps the local model near the global one
            loss = loss + proximal_mu / 2 * sum((p - start[n]).pow(2).sum() for n, p in model.named_parameters())
        opt.zero_grad()
        loss.backward()
        opt.step()
    new = {k: v.detach() for k, v in model.state_dict().items()}
    if attack and attack.kind in ("label-flip", "sign-flip"):
        scale = attack.boost if attack.kind == "label-flip" else -attack.boost
        new = {k: start[k] + scale * (new[k] - start[k]) for k in new}
    return new


@dataclass
class Data:
    """Training images, the held-out test images, and named client splits (name -> indices per client)."""
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    splits: dict[str, list[np.ndarray]]


@dataclass
class Experiment:
    """One federated run: which split, which Flower strategy and its knobs, what malicious clients do."""
    name: str
    split: str = "iid"
    strategy: str = "fedavg"  # fedavg | fedprox | krum | trimmed-mean | median | dp-fedavg
    rounds: int = 20
    local: LocalConfig = field(default_factory=LocalConfig)
    proximal_mu: float = 0.0
    attack: Attack = field(default_factory=Attack)
    trim_beta: float = 0.2
    krum_malicious: int = 1
    dp_noise: float = 1.0
    dp_clip: float = 1.0
    dp_delta: float = 1e-3
    init_from: int | None = None  # start from the final global model of that earlier experiment (else a fresh model)
    seed: int = 0


def make_strategy(e: Experiment, n: int):
    """The Flower strategy object for e.strategy with n clients (and the DP wrapper's accountant, or None)."""
    from flwr.serverapp import strategy as fs

    common = dict(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=n)
    if e.strategy == "fedavg":
        return fs.FedAvg(**common), None
    if e.strategy == "fedprox":
        return fs.FedProx(**common, proximal_mu=e.proximal_mu), None
    if e.strategy == "krum":
        return fs.Krum(**common, num_malicious_nodes=e.krum_malicious), None
    if e.strategy == "trimmed-mean":
        return fs.FedTrimmedAvg(**common, beta=e.trim_beta), None
    if e.strategy == "median":
        return fs.FedMedian(**common), None
    if e.strategy == "dp-fedavg":
        from flwr.serverapp import NeighboringRelation, PrivacyConfig, RdpAccountant, SamplingMethod

        # every client takes part in every round, so there is no sampling amplification to claim
        accountant = RdpAccountant(PrivacyConfig(target_delta=e.dp_delta, population_size=n,
                                                 neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                                 sampling_method=SamplingMethod.NO_AMPLIFICATION))
        # uniform weights: the sensitivity argument needs every clipped update to count 1/n
        base = fs.FedAvg(**common, weighted_by_key="weight")
        return fs.DifferentialPrivacyServerSideFixedClipping(base, noise_multiplier=e.dp_noise, clipping_norm=e.dp_clip,
                                                            num_sampled_clients=n, accountant=accountant), accountant
    raise ValueError(f"unknown strategy {e.strategy!r}")


def simulate(data: Data, experiments: list[Experiment], cpus: int = 2, on_round=None) -> list[dict]:
    """Run every experiment, one after the other, inside ONE Flower simulation (the Ray backend starts once): the
    ServerApp runs each experiment's strategy for its rounds, telling the clients which experiment it is in the train
    config. Per experiment: the global model's test accuracy before training and after each round, the attack's
    success per round (share of test `source` images predicted as `target`), and epsilon (dp-fedavg only).
    on_round(experiment_index, round) is called after each central evaluation (progress bars)."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    n = len(next(iter(data.splits.values())))
    results: list[dict] = []
    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        k = int(context.node_config["partition-id"])
        config = msg.content["config"]
        e = experiments[int(config["experiment"])]
        idx = data.splits[e.split][k]
        state = local_update(msg.content["arrays"].to_torch_state_dict(), data.X[idx], data.y[idx], e.local,
                             float(config.get("proximal-mu", 0.0)), seed=e.seed * 100_000 + int(config["server-round"]) * 100 + k,
                             attack=e.attack if k in e.attack.clients else None)
        return Message(RecordDict({"arrays": ArrayRecord(state),
                                   "metrics": MetricRecord({"num-examples": len(idx), "weight": 1})}), reply_to=msg)

    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        for i, e in enumerate(experiments):
            out = {"accuracy": [], "attack_success": []}
            source = data.y_test == e.attack.source

            def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
                model = SmallCNN(width=WIDTH)
                model.load_state_dict(arrays.to_torch_state_dict())
                pred = predict(model.eval(), data.X_test)
                out["accuracy"].append(float((pred == data.y_test).mean()))
                out["attack_success"].append(float((pred[source] == e.attack.target).mean()))
                if on_round is not None:
                    on_round(i, server_round)
                return MetricRecord({"accuracy": out["accuracy"][-1]})

            strategy, accountant = make_strategy(e, n)
            start = new_model(e.seed).state_dict() if e.init_from is None else results[e.init_from]["state"]
            result = strategy.start(grid=grid, initial_arrays=ArrayRecord(start), num_rounds=e.rounds,
                                    train_config=ConfigRecord({"experiment": i}), evaluate_fn=evaluate)
            out["state"] = result.arrays.to_torch_state_dict()
            if accountant is not None:
                out["epsilon"] = float(accountant.get_epsilon(e.dp_delta))
            results.append(out)

    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.WARNING)  # Flower logs every round at INFO; lab shows a progress bar instead
    quiet = _DropMessage("Federated evaluation will be skipped")  # by design: evaluation is central
    flwr_log.addFilter(quiet)
    # Ray starts its workers at nice 15; here the clients ARE the work, so they run at the driver's priority
    niceness = os.environ.get("RAY_worker_niceness")
    os.environ["RAY_worker_niceness"] = "0"
    try:
        run_simulation(server_app=server, client_app=client, num_supernodes=n,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": False}})
    finally:
        flwr_log.setLevel(level)
        flwr_log.removeFilter(quiet)
        if niceness is None:
            os.environ.pop("RAY_worker_niceness", None)
        else:
            os.environ["RAY_worker_niceness"] = niceness
    if len(results) != len(experiments):
        raise RuntimeError(f"the Flower simulation finished {len(results)} of {len(experiments)} experiments (see its log above)")
    return results


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def rounds_to_reach(accuracy: list[float], level: float) -> int | None:
    """First round (1-based; index 0 is the initial model) whose accuracy is >= level, or None."""
    return next((r for r, a in enumerate(accuracy) if r > 0 and a >= level), None)
