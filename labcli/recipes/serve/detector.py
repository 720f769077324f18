"""`lab serve detector`: a deepfake run's fitted detectors behind TorchServe: file in, P(fake) out.

Serves RUN/detector/ of a `lab detect deepfake-voice` or `lab detect deepfake-image` run. The .mar holds a custom
handler (labcli/serving/detector_handler.py) that runs the run's own decoding, feature extraction and classifiers,
so a served score equals the run's score for the same file. Like `lab serve torchserve`: every listener on
127.0.0.1, token authorization ON (keys in RUN/key_file.json; send `Authorization: Bearer <inference key>`),
`--detach` + `lab serve stop`. Files larger than max_file_mb, empty, or not audio / not an image get a 400.
lab's file front (gateway.FileFront) takes --port and TorchServe's inference API sits behind it on port+5:
the body is the file whatever Content-Type the client sends (TorchServe itself answers a WAV sent as a form
with 500), and a missing or wrong token gets 401 (TorchServe says 400).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from labcli.detect import deepfake_store
from labcli.errors import UserError
from labcli.runs import Run
from labcli.serving import process, source, torchserve
from labcli.serving.settings import ServerSettings


class Config(ServerSettings):
    """--run: a `lab detect deepfake-voice` or `lab detect deepfake-image` run folder (it holds detector/)."""

    detector: str = Field("", description="Saved detector whose P(fake) is `score` and `label` (default: the run's best on held-out fakes); `scores` has them all")
    max_file_mb: float = Field(10.0, gt=0, le=100, description="Largest file accepted (MiB); bigger ones get a 400")
    batch_size: int = Field(4, ge=1, le=64, description="TorchServe server-side batching: largest batch per worker call")
    max_batch_delay_ms: int = Field(5, ge=0, description="How long TorchServe waits to fill a batch (milliseconds)")
    workers: int = Field(1, ge=1, le=16, description="Python worker processes")


def read_run(folder: str) -> tuple[Path, dict, dict]:
    """(run folder, detector meta, summary) with one-line errors for anything that is not a servable deepfake run.

    No folder: the default deepfake-image run (built once, then cached)."""
    run_dir = Path(folder).expanduser() if folder else source.default_detector_run()
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}", "pass a folder made by `lab detect deepfake-voice` or `deepfake-image`")
    if not (run_dir / deepfake_store.FOLDER / "detector.json").is_file():
        raise UserError(f"{run_dir} has no {deepfake_store.FOLDER}/detector.json",
                        "serve a finished `lab detect deepfake-voice`/`deepfake-image` run (runs save their fitted detectors there)")
    meta, _ = deepfake_store.load(run_dir / deepfake_store.FOLDER)  # fails early if a detector file is unreadable
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        summary = {}
    return run_dir, meta, summary


def start(cfg: Config, run_dir: Path, work: Path, name: str, serve_meta: dict):
    """Archive the detector files with the detector handler, start TorchServe (loopback, token auth), wait until ready."""
    torchserve.java_check()
    process.require_ports(torchserve.ports(cfg.port, file_front=True), cfg.host)
    files = sorted(p for p in (run_dir / deepfake_store.FOLDER).iterdir() if p.is_file() and not p.name.startswith("."))
    store = torchserve.build_mar(name, torchserve.DETECTOR_HANDLER, files, serve_meta, work)
    # the frontend's own limit (413, no message) sits well above the handler's, so most oversized files get a 400 that says why
    return torchserve.launch(store, name, work, name=f"detector-{cfg.port}", host=cfg.host, port=cfg.port,
                             batching=torchserve.Batching(cfg.batch_size, cfg.max_batch_delay_ms, cfg.workers),
                             ready_timeout=cfg.ready_timeout, max_request_size=2 * serve_meta["max_bytes"] + 2**20,
                             file_front=True)


def post_file(url: str, data: bytes, key: str, content_type: str = "application/octet-stream") -> tuple[int, dict]:
    """POST a file's bytes; (status, parsed JSON answer)."""
    from labcli.serving.clients import post

    status, body = post(url, data, {"Content-Type": content_type, "Authorization": f"Bearer {key}"})
    try:
        return status, json.loads(body)
    except json.JSONDecodeError:
        return status, {"error": body[:300]}


def smoke_test(run_dir: Path, summary: dict, server: process.Server, keys: dict) -> list[dict]:
    """Send the run's example files; every detector's served score must equal the run's own (within 1e-6)."""
    rows = []
    for example in summary.get("examples", []):
        status, answer = post_file(server.endpoints["predict"], (run_dir / example["file"]).read_bytes(), keys["inference"])
        served = answer.get("scores", {})
        diff = max((abs(served[k] - v) for k, v in example["scores"].items() if k in served), default=float("inf"))
        if status != 200 or diff > 1e-6:
            raise UserError(f"smoke test: {example['file']} answered {status} {json.dumps(answer)[:200]}, "
                            f"run scored {example['scores']}", f"see {server.log}")
        rows.append({"file": example["file"], "truth": example["truth"], "score": answer["score"], "label": answer["label"],
                     "max |served - run|": diff})
    return rows


def check(cfg: Config) -> list[str]:
    """For `lab check`: TorchServe needs Java and its Python modules."""
    return [p for p in (torchserve.java_problem(),) if p]



def plan(cfg: Config) -> str:
    """For `lab check`: what will be served (the default run when none is given)."""
    return source.plan("TorchServe serves the detectors of", cfg.run, detector=True)


def run(cfg: Config, ctx: Run) -> None:
    torchserve.java_check()
    run_dir, meta, summary = read_run(cfg.run)
    detector = cfg.detector or meta["best"]
    if detector not in meta["detectors"]:
        raise UserError(f"the run has no detector '{detector}'", f"choose from: {', '.join(meta['detectors'])}")
    name = f"deepfake-{meta['kind']}"
    serve_meta = {"detector": detector, "threshold": float(meta["settings"].get("threshold", 0.5)),
                  "max_bytes": int(cfg.max_file_mb * 2**20), "threads": cfg.threads, "run": str(run_dir)}
    proc, server, keys = start(cfg, run_dir, ctx.dir, name, serve_meta)
    with process.stopped_on_error(server):
        smoke = smoke_test(run_dir, summary, server, keys) if cfg.smoke else []
        finish(cfg, ctx, run_dir, meta, serve_meta, server, smoke)
    if not cfg.detach:
        process.serve_foreground(proc, server)


def finish(cfg: Config, ctx: Run, run_dir: Path, meta: dict, serve_meta: dict, server: process.Server, smoke: list) -> None:
    from labcli.eval.tables import markdown_table

    e = server.endpoints
    summary = {"backend": "torchserve", "kind": meta["kind"], "run": str(run_dir), "detector": serve_meta["detector"],
               "detectors": meta["detectors"], "threshold": serve_meta["threshold"], "max_bytes": serve_meta["max_bytes"],
               "endpoints": e, "token_auth": True, "smoke": smoke, "detached": cfg.detach, "server": server.name}
    ctx.write_summary(summary)
    what = "a PCM WAV file" if meta["kind"] == "voice" else "an image file (PNG, JPEG, ...)"
    curl = (f"curl -s -H \"Authorization: Bearer $(jq -r .inference.key {e['key_file']})\" "
            f"--data-binary @FILE {e['predict']}")
    ctx.write_report(
        f"# Deepfake {meta['kind']} detector served with TorchServe\n\nRun: `{run_dir}`; detectors: {', '.join(meta['detectors'])}; "
        f"`score`/`label` from `{serve_meta['detector']}` (threshold {serve_meta['threshold']}).\n\n"
        f"- predict: `POST {e['predict']}` with {what} as the body (any Content-Type but multipart/form-data is read as "
        f"the file's bytes) and `Authorization: Bearer <inference key>`; answer "
        f"`{{\"score\", \"label\", \"detector\", \"scores\", \"kind\"}}`\n"
        f"- token authorization: on; keys in `{e['key_file']}`; a missing or wrong token gets 401\n- files over {serve_meta['max_bytes']} bytes, empty, "
        f"or not {what} get a 400 with `{{\"error\": ...}}`\n- management {e['management']}, metrics {e['metrics']}; ready in {e.get('ready_s')} s\n\n"
        f"Example: `{curl}`\n\n" + (f"## Smoke test: the run's example files\n\n{markdown_table(smoke)}" if smoke else ""))
    print(f"TorchServe ready in {e['ready_s']}s: deepfake {meta['kind']} detector '{serve_meta['detector']}' "
          f"(token auth on; keys in {e['key_file']})")
    print(f"  predict  {e['predict']}")
    for row in smoke:
        print(f"  smoke    {row['file']} ({row['truth']}) -> {row['label']} {row['score']:.4f} "
              f"(matches the run: max diff {row['max |served - run|']:.1e})")
    print(f"  try: {curl}")
    if cfg.detach:
        print(f"running in the background (pid {server.pid}); stop it with: lab serve stop --name {server.name}")
