"""`lab reproduce run --run DIR`: run a finished run's saved config again and say what reproduced.

Every run saves its resolved config as DIR/config.yaml, headed by its verb, recipe, lab's commit and
library versions. This reruns `lab VERB RECIPE --config DIR/config.yaml` into RUN/rerun as a child
process (threads, `--nproc` and environment as on the command line), shows where the commit and
versions differ from now, then compares summary.json value by value and metrics.jsonl record by
record: identical, within tolerance, or different.
Measured quantities (times, rates, memory, paths) are listed but never judged: they are not
expected to repeat. Seeds fix everything else, so a difference is a finding worth reading.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

from pydantic import Field

from labcli.config import RecipeConfig, read_yaml
from labcli.errors import UserError
from labcli.runs import Run, prerequisite

MEASURED = (r"(^|_)(s|ms|us|mb|gb|seconds|sec|time|wall|rss|dir|path|file|folder|started)$|_ms_|per_s$|per_second"
            r"|memory|latency|throughput|real_time|fps|hardware|host|version")
VERDICTS = ["identical", "within tolerance", "different"]


DEFAULT_RUN = ["train.max_steps=40", "train.eval_every=20", "train.save_every=20", "train.tensorboard=false"]


def plan(cfg: "Config") -> str:
    what = cfg.run or f"the cached default run `lab finetune tiny-lm {' '.join(DEFAULT_RUN)}` (built first if missing)"
    return f"rerun {what} from its config.yaml and compare its summary and metrics value by value"


class Config(RecipeConfig):
    run: str = Field("", description="The run folder to reproduce (holds config.yaml and summary.json); "
                                     "empty: a small default `lab finetune tiny-lm` run, built once and cached")
    overrides: list[str] = Field([], description="key=value changes for the rerun, e.g. [device=cpu] (they are reported)")
    nproc: int = Field(1, ge=1, le=64, description="Processes for the rerun (give the original's count for DDP/FSDP runs)")
    rtol: float = Field(1e-6, ge=0, description="Relative tolerance for 'within tolerance'")
    atol: float = Field(1e-9, ge=0, description="Absolute tolerance for 'within tolerance'")
    measured: str = Field(MEASURED, description="Regex on a key's last part: values that are measured, not judged")
    strict: bool = Field(True, description="Exit with an error (code 2) when a judged value differs")


def origin(folder: Path) -> tuple[str, str | None, dict]:
    """(verb, recipe, provenance) of a run from its config.yaml. Runs saved before config.yaml had
    that header are named <verb>-<recipe>-<time>; `lab VERB --config` finds their recipe from it."""
    data = read_yaml(folder / "config.yaml")
    verb = data.get("verb") or folder.name.split("-", 1)[0]
    return verb, data.get("recipe"), data.get("lab") or {}


def environment_changes(then: dict) -> list[dict]:
    """Where lab's commit, its tree's state and the library versions differ from the original run's."""
    from labcli.runs import provenance

    now = provenance()
    rows = [{"what": "lab commit", "original": then.get("commit", "(not recorded)"), "now": now["commit"]},
            {"what": "uncommitted changes", "original": then.get("dirty", "(not recorded)"), "now": now["dirty"]}]
    versions = then.get("versions") or {}
    rows += [{"what": name, "original": versions.get(name, "(not recorded)"), "now": v} for name, v in now["versions"].items()]
    return [r for r in rows if r["original"] != r["now"]]


def flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in flatten(sub, f"{prefix}{key}.").items()}
    if isinstance(value, list) and value and all(isinstance(v, (dict, list, int, float)) for v in value):
        return {k: v for i, sub in enumerate(value) for k, v in flatten(sub, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def verdict(a, b, rtol: float, atol: float) -> tuple[str, float | None]:
    """('identical' | 'within tolerance' | 'different', |a-b| for numbers)."""
    if a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)):
        return "identical", 0.0 if isinstance(a, (int, float)) and not isinstance(a, bool) else None
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
    if numbers and math.isclose(a, b, rel_tol=rtol, abs_tol=atol):
        return "within tolerance", abs(a - b)
    return "different", abs(a - b) if numbers else None


def compare(original: dict, rerun: dict, cfg: Config) -> list[dict]:
    """One row per key of either side: its two values and the verdict (or 'measured')."""
    measured = re.compile(cfg.measured, re.IGNORECASE)
    rows = []
    for key in sorted(set(original) | set(rerun)):
        a, b = original.get(key, "(missing)"), rerun.get(key, "(missing)")
        if any(measured.search(part) for part in key.split(".")[-2:]):  # the value's name or its section's
            rows.append({"key": key, "original": a, "rerun": b, "verdict": "measured", "abs_diff": None})
        else:
            v, diff = verdict(a, b, cfg.rtol, cfg.atol)
            rows.append({"key": key, "original": a, "rerun": b, "verdict": v, "abs_diff": diff})
    return rows


def metric_rows(original: list[dict], rerun: list[dict], cfg: Config) -> list[dict]:
    """Per metrics.jsonl key: how many records, the largest |difference|, and the verdict."""
    measured = re.compile(cfg.measured, re.IGNORECASE)
    keys = sorted({k for r in original + rerun for k in r if not measured.search(k)})
    rows = []
    for key in keys:
        a = [r.get(key) for r in original if key in r]
        b = [r.get(key) for r in rerun if key in r]
        pairs = [verdict(x, y, cfg.rtol, cfg.atol) for x, y in zip(a, b)]
        worst = "different" if len(a) != len(b) else max((v for v, _ in pairs), key=VERDICTS.index, default="identical")
        diffs = [d for _, d in pairs if d is not None]
        rows.append({"key": f"metrics.{key}", "records": f"{len(a)} / {len(b)}", "verdict": worst,
                     "abs_diff": max(diffs) if diffs else None})
    return rows



def read_run(folder: Path) -> tuple[dict, list[dict]]:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{folder} has no summary.json (the run did not finish)", "reproduce a finished run") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{folder / 'summary.json'} is not valid JSON ({exc})", "reproduce a run whose files are intact") from None
    metrics = folder / "metrics.jsonl"
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()] if metrics.is_file() else []
    return summary, records


def run(cfg: Config, ctx: Run) -> None:
    folder = Path(cfg.run) if cfg.run else prerequisite("finetune", "tiny-lm", DEFAULT_RUN, "no --run given, reproducing")
    if not (folder / "config.yaml").is_file():
        raise UserError(f"no run folder with a config.yaml at '{cfg.run}'", "pass --run runs/VERB-RECIPE-TIME")
    original_summary, original_metrics = read_run(folder)
    verb, recipe, then = origin(folder)
    if (verb, recipe) == ("reproduce", "run"):
        raise UserError("that folder is itself a `lab reproduce run` run", "pass the run it reproduced (its summary names it)")
    changes = environment_changes(then)
    for row in changes:
        print(f"differs from the original run: {row['what']} {row['original']} -> {row['now']}")
    out = ctx.path("rerun")
    cmd = [sys.executable, "-m", "labcli", verb, *([recipe] if recipe else []), "--config", str(folder / "config.yaml"),
           "--output", str(out),
           *(["--nproc", str(cfg.nproc)] if cfg.nproc > 1 else []), *cfg.overrides]
    print(f"rerunning: lab {' '.join(cmd[3:])}", flush=True)
    code = subprocess.call(cmd)
    if code != 0:
        raise UserError(f"the rerun `lab {verb} {recipe} --config {folder / 'config.yaml'}` failed with exit code {code}",
                        "its error is printed above")
    rerun_summary, rerun_metrics = read_run(out)
    rows = compare(flatten(original_summary), flatten(rerun_summary), cfg) + metric_rows(original_metrics, rerun_metrics, cfg)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS + ["measured"]}
    different = [r["key"] for r in rows if r["verdict"] == "different"]
    summary = {"original": str(folder), "rerun": str(out), "verb": verb, "recipe": recipe, "environment_changes": changes,
               "overrides": cfg.overrides, "nproc": cfg.nproc,
               "rtol": cfg.rtol, "atol": cfg.atol, "counts": counts, "different": different, "reproduced": not different, "rows": rows}
    ctx.write_summary(summary)
    ctx.write_report(report(summary))
    print(f"{counts['identical']} identical, {counts['within tolerance']} within tolerance, {counts['different']} different, "
          f"{counts['measured']} measured (not judged); report: {ctx.path('report.md')}")
    if different and cfg.strict:
        raise UserError(f"the run did not reproduce: {len(different)} values differ ({', '.join(different[:4])}"
                        f"{', ...' if len(different) > 4 else ''})", f"see {ctx.path('report.md')}; strict=false only reports")


def show(value) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|")[:60]


def report(s: dict) -> str:
    c = s["counts"]
    lines = [f"# lab reproduce: `{s['original']}`", "",
             f"Rerun of `lab {s['verb']} {s['recipe']} --config {s['original']}/config.yaml` into `{s['rerun']}`"
             + (f" with {', '.join(s['overrides'])}" if s["overrides"] else "") + f" ({s['nproc']} process(es)).", "",
             f"**{'Reproduced' if s['reproduced'] else 'Not reproduced'}**: {c['identical']} identical, "
             f"{c['within tolerance']} within tolerance (rtol {s['rtol']}, atol {s['atol']}), {c['different']} different; "
             f"{c['measured']} measured values (times, rates, memory, paths) listed, not judged.", "",
             "Environment: " + ("; ".join(f"{r['what']} {r['original']} -> {r['now']}" for r in s["environment_changes"])
                                or "same lab commit and library versions as the original run") + ".", "",
             "| key | original | rerun | abs diff | verdict |", "|---|---|---|---:|---|"]
    order = {"different": 0, "within tolerance": 1, "identical": 2, "measured": 3}
    for r in sorted(s["rows"], key=lambda r: order[r["verdict"]]):
        if "records" in r:  # a metrics.jsonl key: how many records each side logged
            original, rerun = (f"{n} records" for n in r["records"].split(" / "))
        else:
            original, rerun = show(r["original"]), show(r["rerun"])
        diff = "" if r["abs_diff"] is None else f"{r['abs_diff']:.3g}"
        lines.append(f"| `{r['key']}` | {original} | {rerun} | {diff} | {r['verdict']} |")
    return "\n".join(lines) + "\n"
