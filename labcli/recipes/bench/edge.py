"""`lab bench edge`: what INT8, pruning, distillation and export do to small digit classifiers on one CPU thread.

Data: MNIST-5k (labcli.data.mnist5k, the reader `lab detect` uses): 4,000 train images, of which `val_size` are
held out as the validation split (every choice below is made on it), and 1,000 test images (reported only).

Per arch (labcli.edge.nets) one fp32 model is trained (labcli.detect.vision.train_model: Adam, the loop of the
`lab detect` digits recipes), then each variant is built from it (labcli.edge):
  fp32                          the trained model, torch eager
  dynamic-int8                  torch.ao quantize_dynamic: Linear weights int8, activations quantized per call
  torchao-int8                  torchao Int8DynamicActivationInt8WeightConfig (Linear), torch eager
  static-int8                   torch.ao FX post-training static INT8 (x86 backend), calibrated on train images
  qat-int8                      torch.ao FX quantization-aware fine-tune, then INT8
  prune-magnitude               global L1 unstructured pruning + fine-tune (amount chosen on validation)
  prune-channels                torch-pruning channel removal + fine-tune (ratio chosen on validation)
  prune-channels+static-int8    the channel-pruned model, then static INT8
  distill-student               only for `distill.teacher`: a SmallCNN of width `distill.student_width` trained
                                on the teacher's soft labels, beside the same student trained on labels alone
  onnx-fp32                     torch.onnx (dynamo) export, onnxruntime
  onnx-dynamic-int8             onnxruntime quantize_dynamic of that file
  onnx-static-int8              onnxruntime quantize_static (QDQ, per-channel int8 weights, calibrated)
  executorch-fp32               ExecuTorch .pte lowered to XNNPACK, run by the ExecuTorch runtime

Every variant is one cell (`ctx.cell`), kept on disk: `--resume auto` reuses the finished ones. Latency: batch 1,
one thread for torch, onnxruntime and XNNPACK alike, `timing.rounds` rounds of `timing.iters` calls over the same
test images, p50/p95 over every call and the spread of the rounds' medians. File bytes: the saved state_dict
(torch), the .onnx or .pte file. Parity: max |logit difference| and argmax agreement with the fp32 eager model on
the test images.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field

from labcli.config import RecipeConfig, Section
from labcli.errors import UserError
from labcli.runs import Run

RESUMABLE = True  # every variant is a ctx.cell; the trained models are files in the run folder

Arch = Literal["cnn", "mobilenet-v3-small", "squeezenet"]
Variant = Literal["fp32", "dynamic-int8", "torchao-int8", "static-int8", "qat-int8", "prune-magnitude",
                  "prune-channels", "prune-channels+static-int8", "distill-student", "onnx-fp32", "onnx-dynamic-int8",
                  "onnx-static-int8", "executorch-fp32"]
VARIANTS = list(Variant.__args__)
RUNTIME = {"onnx": "onnxruntime", "executorch": "ExecuTorch (XNNPACK)"}


class TrainingConfig(Section):
    epochs: int = Field(4, ge=1, description="Epochs of each fp32 model (and of the distillation students)")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate")
    batch_size: int = Field(64, ge=1, description="Training batch size")
    finetune_epochs: int = Field(1, ge=1, description="Epochs of fine-tuning after pruning and of QAT")
    finetune_lr: float = Field(5e-4, gt=0, description="Adam learning rate of the fine-tunes")


class PruneConfig(Section):
    amounts: list[float] = Field([0.5, 0.7, 0.9], min_length=1, description="Magnitude pruning: fractions of weights "
                                 "to zero, candidates (the largest within max_val_drop of fp32 on validation wins)")
    ratios: list[float] = Field([0.25, 0.5, 0.75], min_length=1, description="Channel pruning: fractions of channels "
                                "to remove, candidates (chosen the same way)")
    max_val_drop: float = Field(0.01, ge=0, le=1, description="Accepted validation accuracy loss vs fp32 (0.01 = 1 point)")


class DistillConfig(Section):
    teacher: Arch = Field("cnn", description="The arch whose fp32 model teaches the student")
    student_width: int = Field(4, ge=1, description="Width (first conv's channels) of the SmallCNN student")
    temperatures: list[float] = Field([2.0, 4.0], min_length=1, description="Softmax temperatures of the soft labels, "
                                      "candidates (with alphas; the best student on validation is reported)")
    alphas: list[float] = Field([0.5, 0.9], min_length=1, description="Weights of the soft-label loss (1 - alpha on the "
                                "true labels), candidates")


class TimingConfig(Section):
    rounds: int = Field(5, ge=1, description="Timing rounds per variant (their medians give the spread)")
    iters: int = Field(200, ge=1, description="Batch-1 calls per round")
    warmup: int = Field(20, ge=0, description="Untimed calls before the rounds")
    threads: int = Field(1, ge=1, description="Threads of torch, onnxruntime and XNNPACK while timing")


class Config(RecipeConfig):
    archs: list[Arch] = Field(["cnn", "mobilenet-v3-small", "squeezenet"], min_length=1, description="Nets to build and train")
    variants: list[Variant] = Field(VARIANTS, min_length=1, description="What to build from each trained fp32 model")
    val_size: int = Field(500, ge=10, description="Train images held out for choices (pruning amounts)")
    train_size: int | None = Field(None, ge=10, description="Use only this many training images (None: all the rest)")
    test_size: int = Field(1000, ge=10, le=2500, description="Test images (reported only)")
    calibration: int = Field(256, ge=1, description="Train images that calibrate static INT8 (torch and onnxruntime)")
    training: TrainingConfig = Field(TrainingConfig(), description="Training of the fp32 models and fine-tunes")
    prune: PruneConfig = Field(PruneConfig(), description="Pruning candidates and the validation rule")
    distill: DistillConfig = Field(DistillConfig(), description="Knowledge distillation teacher -> student")
    timing: TimingConfig = Field(TimingConfig(), description="Batch-1 latency measurement")


def check(cfg: Config) -> list[str]:
    problems = []
    for name, values in (("prune.amounts", cfg.prune.amounts), ("prune.ratios", cfg.prune.ratios),
                         ("distill.alphas", cfg.distill.alphas)):
        bad = [v for v in values if not 0 < v < 1]
        if bad:
            problems.append(f"{name} has {bad[0]}, not a fraction in (0, 1) (hint: e.g. {name}=[0.5,0.7])")
    if any(t <= 0 for t in cfg.distill.temperatures):
        problems.append("distill.temperatures must be > 0 (hint: e.g. distill.temperatures=[2,4])")
    if "distill-student" in cfg.variants and cfg.distill.teacher not in cfg.archs:
        problems.append(f"distill.teacher={cfg.distill.teacher} is not among archs={cfg.archs} "
                        f"(hint: add it to archs or set distill.teacher to one of them)")
    if cfg.train_size is not None and cfg.train_size + cfg.val_size > 5000 - cfg.test_size:
        problems.append(f"train_size {cfg.train_size} + val_size {cfg.val_size} exceed the {5000 - cfg.test_size} "
                        f"non-test images (hint: lower train_size or val_size)")
    if cfg.train_size is None and cfg.val_size >= 5000 - cfg.test_size - 10:
        problems.append(f"val_size {cfg.val_size} leaves no training images (hint: e.g. val_size=500)")
    return problems


def plan(cfg: Config) -> str:
    return f"{len(cfg.archs)} arch(s) x {len(cfg.variants)} variant(s), each timed {cfg.timing.rounds} x {cfg.timing.iters} calls"


# -- data and models ----------------------------------------------------------------------------------------
class Data:
    """MNIST-5k split three ways: train / validation (choices) / test (reported)."""

    def __init__(self, cfg: Config):
        import torch

        from labcli.data import mnist5k

        (X, y), (X_te, y_te) = mnist5k.read(cfg.seed, n_test=cfg.test_size)
        n_train = cfg.train_size or len(X) - cfg.val_size
        self.val_x, self.val_y = torch.from_numpy(X[:cfg.val_size]), torch.from_numpy(y[:cfg.val_size])
        self.train_x = torch.from_numpy(X[cfg.val_size:cfg.val_size + n_train])
        self.train_y = torch.from_numpy(y[cfg.val_size:cfg.val_size + n_train])
        self.test_x, self.test_y = torch.from_numpy(X_te), torch.from_numpy(y_te)
        self.calibration = self.train_x[:cfg.calibration]
        self.singles = list(self.test_x[:32].split(1))  # the batch-1 inputs every variant is timed on

    def describe(self) -> str:
        return (f"MNIST-5k: {len(self.train_y)} train, {len(self.val_y)} validation (choices), "
                f"{len(self.test_y)} test (reported)")


def accuracy(predict, X, y, batch: int = 500) -> tuple[float, object]:
    """(accuracy, logits) of `predict(x) -> logits tensor` over X in batches."""
    import torch

    with torch.inference_mode():
        logits = torch.cat([torch.as_tensor(predict(X[i:i + batch])) for i in range(0, len(X), batch)])
    return float((logits.argmax(1) == y).float().mean()), logits


class Bench:
    """The state of one bench: data, trained models (files in the run folder) and the fp32 reference logits."""

    def __init__(self, cfg: Config, ctx: Run, data: Data):
        self.cfg, self.ctx, self.data = cfg, ctx, data
        self.fp32: dict = {}
        self.reference: dict = {}
        self.done: dict = {}

    def cell(self, name: str, compute) -> dict:
        """ctx.cell, once per process: a cell another variant needs (prune-channels) is not computed twice."""
        if name not in self.done:
            self.done[name] = self.ctx.cell(name, compute)
        return self.done[name]

    def model_path(self, name: str) -> Path:
        return self.ctx.path(f"models/{name}")

    def save_state(self, model, name: str) -> Path:
        import torch

        from labcli import runs

        return runs.write_with(self.model_path(name), lambda tmp: torch.save(model.state_dict(), tmp))

    def save_module(self, model, name: str) -> Path:
        import torch

        from labcli import runs

        return runs.write_with(self.model_path(name), lambda tmp: torch.save(model, tmp))

    def train(self, model, X, y, epochs: int | None = None, lr: float | None = None):
        from labcli.detect.vision import train_model

        t = self.cfg.training
        return train_model(model, X, y, epochs=epochs or t.epochs, lr=lr or t.lr, batch_size=t.batch_size, seed=self.cfg.seed)

    def finetune(self, model):
        t = self.cfg.training
        return self.train(model, self.data.train_x, self.data.train_y, t.finetune_epochs, t.finetune_lr)

    def val_accuracy(self, model) -> float:
        return accuracy(model, self.data.val_x, self.data.val_y)[0]

    # the fp32 model of each arch: a cell that trains and saves it; later cells (and resumed runs) load the file
    def trained(self, arch: str):
        import torch

        from labcli.edge import nets

        if arch in self.fp32:
            return self.fp32[arch]

        def fit() -> dict:
            start = time.perf_counter()
            model = self.train(nets.build(arch, self.cfg.seed).train(), self.data.train_x, self.data.train_y)
            self.save_state(model, f"{arch}-fp32.pt")
            return {"val_accuracy": self.val_accuracy(model), "train_s": time.perf_counter() - start}

        info = self.ctx.cell(f"train-{arch}", fit)
        model = nets.build(arch, self.cfg.seed)
        model.load_state_dict(torch.load(self.model_path(f"{arch}-fp32.pt"), weights_only=True))
        self.fp32[arch] = (model.eval(), info)
        self.reference[arch] = accuracy(model, self.data.test_x, self.data.test_y)[1]
        return self.fp32[arch]

    def choose(self, arch: str, candidates: list[float], make) -> tuple[object, float, list[dict]]:
        """The largest candidate whose fine-tuned model stays within max_val_drop of fp32 on validation (else the
        smallest candidate), its model, and every candidate's validation accuracy."""
        fp32, info = self.trained(arch)
        tried = []
        for c in sorted(set(candidates)):
            model = self.finetune(make(fp32, c))
            tried.append({"value": c, "val_accuracy": self.val_accuracy(model), "model": model})
        ok = [t for t in tried if t["val_accuracy"] >= info["val_accuracy"] - self.cfg.prune.max_val_drop]
        best = ok[-1] if ok else tried[0]
        return best["model"], best["value"], [{k: t[k] for k in ("value", "val_accuracy")} for t in tried]


# -- measuring one variant ------------------------------------------------------------------------------------
def measure(bench: Bench, arch: str, predict, single, file: Path, parameters: int, runtime: str) -> dict:
    """Test accuracy, parity with the fp32 eager logits, batch-1 latency, file bytes."""
    import torch

    from labcli.edge import timing

    acc, logits = accuracy(predict, bench.data.test_x, bench.data.test_y)
    ref = bench.reference[arch]
    t = bench.cfg.timing
    threads = torch.get_num_threads()
    torch.set_num_threads(t.threads)
    try:
        with torch.inference_mode():
            lat = timing.latency(single, bench.data.singles if runtime != "onnxruntime"
                                 else [x.numpy() for x in bench.data.singles], t.rounds, t.iters, t.warmup)
    finally:
        torch.set_num_threads(threads)
    return {"runtime": runtime, "accuracy": acc, "file_bytes": timing.file_bytes(file), "file": file.name,
            "parameters": parameters, **lat, "max_abs_logit_diff": float((logits.float() - ref).abs().max()),
            "argmax_agreement": float((logits.argmax(1) == ref.argmax(1)).float().mean())}


def torch_row(bench: Bench, arch: str, model, file_name: str, save_module: bool = False) -> dict:
    from labcli.edge import nets, quantize

    path = bench.save_module(model, file_name) if save_module else bench.save_state(model, file_name)
    row = measure(bench, arch, model, model, path, nets.count_parameters(model), "torch eager")
    row["int8_weight_tensors"], row["float_weight_tensors"] = quantize.int8_weights(model)
    return row


def onnx_row(bench: Bench, arch: str, path: Path) -> dict:
    import numpy as np
    import torch

    from labcli.edge import export

    sess = export.session(path, bench.cfg.timing.threads)
    row = measure(bench, arch, lambda x: torch.from_numpy(export.run_onnx(sess, np.ascontiguousarray(x.numpy()))),
                  lambda x: export.run_onnx(sess, x), path, onnx_parameters(path), "onnxruntime")
    row["int8_weight_tensors"], row["float_weight_tensors"] = export.onnx_int8_initializers(path)
    return row


def onnx_parameters(path: Path) -> int:
    """Values stored in the file's initializers (weights, biases, quantization scales and zero points)."""
    import numpy as np
    import onnx

    return int(sum(np.prod(t.dims) for t in onnx.load(str(path)).graph.initializer))


def build_variant(bench: Bench, arch: str, variant: str) -> dict:
    """One cell: build `variant` from the arch's fp32 model and measure it."""
    from labcli.edge import export, nets, prune, quantize

    fp32, _ = bench.trained(arch)
    data = bench.data
    if variant == "fp32":
        return torch_row(bench, arch, fp32, f"{arch}-fp32.pt")
    if variant == "dynamic-int8":
        return torch_row(bench, arch, quantize.dynamic_int8(fp32), f"{arch}-dynamic-int8.pt")
    if variant == "torchao-int8":
        return torch_row(bench, arch, quantize.torchao_int8(fp32), f"{arch}-torchao-int8.pt")
    if variant == "static-int8":
        return torch_row(bench, arch, quantize.static_int8(fp32, data.calibration), f"{arch}-static-int8.pt")
    if variant == "qat-int8":
        return torch_row(bench, arch, quantize.qat_int8(fp32, data.calibration, bench.finetune), f"{arch}-qat-int8.pt")
    if variant == "prune-magnitude":
        model, amount, tried = bench.choose(arch, bench.cfg.prune.amounts, prune.magnitude)
        model = prune.make_permanent(model)
        row = torch_row(bench, arch, model, f"{arch}-prune-magnitude.pt")
        row["parameters_nonzero"] = nets.count_parameters(model, nonzero=True)
        row.update(chosen=f"amount {amount} (validation)", candidates=tried, sparsity=prune.sparsity(model))
        return row
    if variant == "prune-channels":
        model, ratio, tried = bench.choose(arch, bench.cfg.prune.ratios, lambda m, r: prune.channels(m, r, data.calibration))
        row = torch_row(bench, arch, model, f"{arch}-prune-channels.pt", save_module=True)
        row.update(chosen=f"ratio {ratio} (validation)", candidates=tried, channels=prune.channel_counts(model))
        return row
    if variant == "prune-channels+static-int8":
        pruned = bench.cell(f"{arch}-prune-channels", lambda: guarded(bench, arch, "prune-channels"))
        if pruned.get("status") != "ok":
            raise RuntimeError(f"prune-channels did not run: {pruned.get('note')}")
        model = load_module(bench.model_path(f"{arch}-prune-channels.pt"))
        row = torch_row(bench, arch, quantize.static_int8(model, data.calibration), f"{arch}-prune-channels-static-int8.pt")
        row["chosen"] = pruned.get("chosen")
        return row
    if variant == "onnx-fp32":
        return onnx_row(bench, arch, onnx_fp32(bench, arch))
    if variant == "onnx-dynamic-int8":
        return onnx_row(bench, arch, export.ort_dynamic_int8(onnx_fp32(bench, arch), bench.model_path(f"{arch}-dynamic-int8.onnx")))
    if variant == "onnx-static-int8":
        path = export.ort_static_int8(onnx_fp32(bench, arch), bench.model_path(f"{arch}-static-int8.onnx"),
                                      data.calibration.numpy())
        return onnx_row(bench, arch, path)
    if variant == "executorch-fp32":
        import torch

        path = export.to_pte(fp32, bench.model_path(f"{arch}-fp32.pte"), data.calibration)
        method = export.pte_method(path, bench.cfg.timing.threads)
        one = lambda x: export.run_pte(method, x)
        row = measure(bench, arch, lambda X: torch.cat([one(x) for x in X.split(1)]), one, path,
                      nets.count_parameters(fp32), "ExecuTorch (XNNPACK)")
        return row
    raise ValueError(variant)


def onnx_fp32(bench: Bench, arch: str) -> Path:
    from labcli.edge import export

    path = bench.model_path(f"{arch}-fp32.onnx")
    return path if path.exists() else export.to_onnx(bench.trained(arch)[0], path, bench.data.calibration)


def load_module(path: Path):
    import torch

    return torch.load(path, weights_only=False).eval()  # a module this run saved (pruned shapes differ from config)


def students(bench: Bench) -> list[dict]:
    """The student trained on labels alone and on the teacher's soft labels: same init, batches and epochs."""
    from labcli.edge import distill, nets

    cfg = bench.cfg
    teacher, _ = bench.trained(cfg.distill.teacher)
    rows = []
    for how in ("labels", "kd"):
        def fit(how=how) -> dict:
            student = nets.build("cnn", cfg.seed + 1, width=cfg.distill.student_width).train()
            chosen = ""
            if how == "labels":
                student = bench.train(student, bench.data.train_x, bench.data.train_y)
            else:  # every (T, alpha) from the same init; the best on validation is kept
                d, t, init = cfg.distill, cfg.training, copy.deepcopy(student)
                tried = []
                for temperature in d.temperatures:
                    for alpha in d.alphas:
                        s = distill.distill(copy.deepcopy(init), teacher, bench.data.train_x, bench.data.train_y,
                                            epochs=t.epochs, temperature=temperature, alpha=alpha, lr=t.lr,
                                            batch_size=t.batch_size, seed=cfg.seed)
                        tried.append((bench.val_accuracy(s), -len(tried), temperature, alpha, s))
                _, _, temperature, alpha, student = max(tried, key=lambda c: c[:2])  # ties: the first tried
                chosen = f"T {temperature:g}, alpha {alpha:g} (validation, of {len(tried)})"
            row = torch_row(bench, cfg.distill.teacher, student, f"student-{how}.pt")
            row["val_accuracy"] = bench.val_accuracy(student)
            return {**row, "chosen": chosen} if chosen else row

        name = "student (labels only)" if how == "labels" else f"student (KD from {cfg.distill.teacher} fp32)"
        rows.append({"arch": cfg.distill.teacher, "variant": name,
                     **bench.cell(f"student-{how}", lambda fit=fit: guarded_call(fit))})
    return rows


def guarded_call(fn) -> dict:
    """A variant that cannot run here is a row saying why (the library's message), not a crashed bench."""
    try:
        return {"status": "ok", "note": "", **fn()}
    except Exception as exc:  # noqa: BLE001 (a real failure of a toolkit on this machine is the result)
        first = (str(exc).strip().splitlines() or [""])[0]
        return {"status": "cannot run", "note": f"{type(exc).__name__}: {first[:200]}"}


def guarded(bench: Bench, arch: str, variant: str) -> dict:
    return guarded_call(lambda: build_variant(bench, arch, variant))


# -- table, report, plot ----------------------------------------------------------------------------------------
def finish_rows(rows: list[dict]) -> None:
    """Δ% vs the arch's fp32 eager row. An INT8 row is also compared with fp32 on its own runtime (torch eager or
    onnxruntime) by CPU time per call (the load on a shared machine inflates long calls' wall time, not their CPU
    time): when even its fastest round's CPU median is above fp32's slowest one, the note says it is slower."""
    ok = [r for r in rows if r.get("status") == "ok"]
    for r in ok:
        base = next((b for b in ok if b["arch"] == r["arch"] and b["variant"] == "fp32"), None)
        if base:
            r["accuracy_delta_points"] = 100 * (r["accuracy"] - base["accuracy"])
            for key in ("file_bytes", "parameters", "p50_ms"):
                r[f"{key}_delta_pct"] = 100 * (r[key] - base[key]) / base[key]
        if "int8" not in r["variant"]:
            continue
        same = "onnx-fp32" if r["runtime"] == "onnxruntime" else "fp32"
        ref = next((b for b in ok if b["arch"] == r["arch"] and b["variant"] == same), None)
        if ref:
            r["cpu_p50_vs_same_runtime_fp32_pct"] = 100 * (r["cpu_p50_ms"] - ref["cpu_p50_ms"]) / ref["cpu_p50_ms"]
            if r["cpu_round_p50_min_ms"] > ref["cpu_round_p50_max_ms"]:
                r["note"] = (r.get("note", "") + f" slower than {r['runtime']} fp32: {r['cpu_p50_ms']:.3f} vs "
                             f"{ref['cpu_p50_ms']:.3f} CPU ms p50").strip()


def table_rows(rows: list[dict]) -> list[dict]:
    from labcli.eval.tables import fmt

    def pct(v):
        return "-" if v is None else f"{v:+.1f}%"

    out = []
    for r in rows:
        if r.get("status") != "ok":
            out.append({"arch": r["arch"], "variant": r["variant"], "note": f"**{r.get('status')}**: {r.get('note')}"})
            continue
        params = f"{r['parameters']:,}" + (f" ({r['parameters_nonzero']:,} ≠ 0)" if "parameters_nonzero" in r else "")
        out.append({
            "arch": r["arch"], "variant": r["variant"], "runtime": r["runtime"],
            "accuracy": fmt(100 * r["accuracy"], 1), "Δ acc (points)": fmt(r.get("accuracy_delta_points"), 1),
            "file (KB)": fmt(r["file_bytes"] / 1024, 1), "Δ size": pct(r.get("file_bytes_delta_pct")),
            "parameters": params, "Δ params": pct(r.get("parameters_delta_pct")),
            "p50 (ms)": fmt(r["p50_ms"], 3), "p95 (ms)": fmt(r["p95_ms"], 3),
            "round p50 spread (ms)": f"{r['round_p50_min_ms']:.3f}–{r['round_p50_max_ms']:.3f}",
            "Δ p50": pct(r.get("p50_ms_delta_pct")),
            "CPU p50 (ms)": fmt(r["cpu_p50_ms"], 3),
            "Δ CPU p50 vs fp32 on its runtime": pct(r.get("cpu_p50_vs_same_runtime_fp32_pct")),
            "int8 / float weight tensors": f"{r['int8_weight_tensors']} / {r['float_weight_tensors']}" if "int8_weight_tensors" in r else "-",
            "max \\|Δlogit\\| vs fp32": fmt(r["max_abs_logit_diff"], 4 if r["max_abs_logit_diff"] >= 1e-3 else None),
            "argmax agree": fmt(100 * r["argmax_agreement"], 1) + "%",
            "note": "; ".join(x for x in (r.get("chosen"), r.get("note")) if x),
        })
    return out


def anchors(rows: list[dict]) -> list[dict]:
    """The issue's anchors, per arch and INT8 variant: ≈ 1/4 the size (ratio ≤ 0.3) of the fp32 file of the same
    format (state_dict or .onnx) and ≤ 1 point accuracy loss against fp32."""
    ok = [r for r in rows if r.get("status") == "ok"]
    out = []
    for r in ok:
        same = "onnx-fp32" if r["runtime"] == "onnxruntime" else "fp32"
        ref = next((b for b in ok if b["arch"] == r["arch"] and b["variant"] == same), None)
        if "int8" not in r["variant"] or "+" in r["variant"] or ref is None or r.get("accuracy_delta_points") is None:
            continue
        ratio = r["file_bytes"] / ref["file_bytes"]
        loss = round(-r["accuracy_delta_points"], 2) + 0.0  # + 0.0: no "-0.0"
        out.append({"arch": r["arch"], "variant": r["variant"], "size ratio vs fp32 (same format)": round(ratio, 3),
                    "≈ 1/4 size (≤ 0.30)": "holds" if ratio <= 0.30 else "does not hold",
                    "accuracy loss (points)": loss, "≤ 1 point": "holds" if loss <= 1.0 else "does not hold"})
    return out


def plot(rows: list[dict], ctx: Run) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    ok = [r for r in rows if r.get("status") == "ok"]
    archs = list(dict.fromkeys(r["arch"] for r in ok))
    fig, axes = plt.subplots(1, len(archs), figsize=(6 * len(archs), 4.5), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        mine = [r for r in ok if r["arch"] == arch]
        for r in mine:
            marker = {"torch eager": "o", "onnxruntime": "s"}.get(r["runtime"], "^")
            ax.scatter(r["cpu_p50_ms"], 100 * r["accuracy"], s=20 + r["file_bytes"] / 4096, marker=marker, alpha=0.7)
            ax.annotate(r["variant"], (r["cpu_p50_ms"], 100 * r["accuracy"]), fontsize=6, xytext=(3, 2),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_title(f"{arch} (marker area ~ file size; o torch, s onnxruntime, ^ ExecuTorch)", fontsize=8)
        ax.set_xlabel("p50 CPU time per call, batch 1, one thread (ms, log)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    return save(fig, ctx.path("edge.png"))


COLUMNS = ["arch", "variant", "runtime", "accuracy", "Δ acc (points)", "file (KB)", "Δ size", "parameters", "p50 (ms)",
           "p95 (ms)", "Δ p50", "CPU p50 (ms)",
           "Δ CPU p50 vs fp32 on its runtime", "max \\|Δlogit\\| vs fp32", "argmax agree", "note"]


def report(cfg: Config, ctx: Run, rows: list[dict], info: dict) -> None:
    from labcli.eval.tables import markdown_table

    shown, anchor = table_rows(rows), anchors(rows)
    picture = plot(rows, ctx)
    ctx.write_summary({**info, "cells": rows, "rows": shown, "anchors": anchor})
    ctx.write_report(
        f"# {ctx.verb} {ctx.recipe}\n\nHardware: {info['hardware']}. {info['data']}. Load average {info['load']:.2f} "
        f"before, {info['load_after']:.2f} after. fp32 models: {cfg.training.epochs} epochs of Adam (lr "
        f"{cfg.training.lr}); pruning and QAT fine-tune {cfg.training.finetune_epochs} epoch(s) at lr "
        f"{cfg.training.finetune_lr}. Latency: batch 1, {cfg.timing.threads} thread(s) (torch, onnxruntime, XNNPACK), "
        f"{cfg.timing.rounds} rounds x {cfg.timing.iters} calls after {cfg.timing.warmup} warm-up calls; the spread is "
        f"the range of the rounds' medians; CPU p50 is the process's CPU time per call (what the load on a shared "
        f"machine does not inflate), and INT8 rows are called slower than fp32 on their runtime only when every "
        f"round's CPU median is. File: the saved state_dict (torch eager; the whole module for "
        f"channel-pruned models), the .onnx or .pte file. Parity: against the fp32 eager logits on the test images. "
        f"Accuracy on the test split; pruning amounts/ratios chosen on the validation split. Quantization: "
        f"{info['quantization']}\n\n{markdown_table(shown)}\n\n## Anchors (issue 21)\n\n"
        f"INT8 ≈ 1/4 the fp32 file of the same format and ≤ 1 point accuracy loss:\n\n{markdown_table(anchor)}\n\n"
        f"![accuracy vs latency]({picture.name})\n")


def run(cfg: Config, ctx: Run) -> None:
    import torch

    from labcli.eval.measure import hardware_line
    from labcli.eval.tables import print_table

    if problems := check(cfg):
        raise UserError(problems[0])
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization logs advice on the root logger
    warnings.filterwarnings("ignore", module="torch.ao")
    data = Data(cfg)
    bench = Bench(cfg, ctx, data)
    info = {"hardware": hardware_line(torch.device("cpu")), "data": data.describe(), "load": os.getloadavg()[0],
            "threads": cfg.timing.threads,
            "quantization": "torch.ao (x86 backend, fbgemm/oneDNN kernels) for dynamic/static/QAT, torchao "
                            "Int8DynamicActivationInt8WeightConfig, onnxruntime.quantization (dynamic; static QDQ "
                            "per-channel, uint8 activations). Dynamic INT8 only quantizes Linear layers."}
    rows = []
    for arch in cfg.archs:
        for variant in cfg.variants:
            if variant == "distill-student":
                if arch == cfg.distill.teacher:
                    rows += students(bench)
                continue
            print(f"  {arch} / {variant}", flush=True)
            rows.append({"arch": arch, "variant": variant,
                         **bench.cell(f"{arch}-{variant}", lambda arch=arch, variant=variant: guarded(bench, arch, variant))})
    info["fp32_training"] = {arch: bench.trained(arch)[1] for arch in cfg.archs}
    info["load_after"] = os.getloadavg()[0]
    finish_rows(rows)
    report(cfg, ctx, rows, info)
    print_table(table_rows(rows), COLUMNS, title=f"bench edge ({info['hardware']})")
    for a in anchors(rows):
        print(f"{a['arch']} {a['variant']}: {a['size ratio vs fp32 (same format)']:.2f} x the fp32 file ({a['≈ 1/4 size (≤ 0.30)']}), "
              f"accuracy {0.0 - a['accuracy loss (points)']:+.1f} points ({a['≤ 1 point']})")
