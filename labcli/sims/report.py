"""Outputs of the arm simulations: progress bar, steps.csv, plots, video, report.md and console tables."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from labcli import runs


@contextmanager
def progress_bar(label: str, total: int):
    """Yield `advance(step)`; a rich progress bar over control steps."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda step: bar.update(task, completed=step)


def write_steps_csv(path: Path, result, joint_names: list[str], every: int = 1) -> None:
    """One row per control step: t, q, q_ref, q̇, τ and error for every joint."""
    cols = ["t"] + [f"{kind}_{j + 1}" for kind in ("q", "q_ref", "qd", "tau", "error") for j in range(len(joint_names))]
    table = np.column_stack([result.t, result.q, result.q_ref, result.qd, result.tau, result.error])[::every]
    buf = io.StringIO()
    np.savetxt(buf, table, delimiter=",", header=",".join(cols), comments="", fmt="%.6g")
    runs.write_text(path, buf.getvalue())


def plot_run(folder: Path, result, arm) -> list[str]:
    """Three PNGs: q vs q_ref, torques against their limits, tracking errors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    n = arm.nq
    names = []
    specs = [
        ("tracking.png", "joint angle (rad)", lambda ax, j: (ax.plot(result.t, result.q_ref[:, j], "--", label="q_ref"), ax.plot(result.t, result.q[:, j], label="q"))),
        ("torques.png", "torque (N·m)", lambda ax, j: (ax.plot(result.t, result.tau[:, j]), ax.axhline(arm.tau_max[j], color="r", lw=0.8), ax.axhline(-arm.tau_max[j], color="r", lw=0.8))),
        ("errors.png", "q_ref - q (rad)", lambda ax, j: ax.plot(result.t, result.error[:, j])),
    ]
    for name, ylabel, draw in specs:
        fig, axes = plt.subplots(n, 1, figsize=(8, 1.6 * n), sharex=True)
        for j, ax in enumerate(axes):
            draw(ax, j)
            ax.set_ylabel(f"j{j + 1}", rotation=0, labelpad=12)
            ax.grid(alpha=0.3)
        if name == "tracking.png":
            axes[0].legend(loc="upper right", fontsize=7)
        if result.estop_time is not None:
            for ax in axes:
                ax.axvline(result.estop_time, color="k", ls=":", lw=1)
        axes[-1].set_xlabel("time (s)")
        fig.suptitle(f"{arm.spec.name}: {ylabel}")
        fig.tight_layout()
        save(fig, folder / name)
        names.append(name)
    return names


class VideoRecorder:
    """Headless EGL rendering of the simulation into GIF (Pillow) or MP4 (imageio-ffmpeg)."""

    def __init__(self, arm, video_cfg, path: Path):
        import mujoco

        self.arm, self.cfg, self.path = arm, video_cfg, Path(path)
        if video_cfg.format == "mp4":
            try:
                import imageio_ffmpeg
            except ImportError:
                from labcli.errors import UserError

                raise UserError("--video with render.format=mp4 needs imageio-ffmpeg", "pip install imageio-ffmpeg, or use render.format=gif") from None
        from labcli.sims.robots import preload_triton

        preload_triton()
        try:
            self.renderer = mujoco.Renderer(arm.model, video_cfg.height, video_cfg.width)
        except Exception as exc:  # no EGL/OSMesa: say so in one line
            from labcli.errors import UserError

            raise UserError(f"--video: headless rendering failed ({exc})", "install libegl1 or set MUJOCO_GL=osmesa, or drop --video") from None
        self.camera = mujoco.MjvCamera()
        self.camera.lookat[:] = [0.25, 0.0, 0.4]
        self.camera.distance, self.camera.azimuth, self.camera.elevation = 2.0, 140.0, -20.0
        self.frames: list[np.ndarray] = []

    def capture(self, t: float) -> None:
        self.renderer.update_scene(self.arm.data, self.camera)
        self.frames.append(self.renderer.render().copy())

    def save(self) -> dict:
        def write(tmp: str) -> None:
            if self.cfg.format == "gif":
                from PIL import Image

                images = [Image.fromarray(f) for f in self.frames]
                images[0].save(tmp, save_all=True, append_images=images[1:], duration=int(1000 / self.cfg.fps), loop=0)
            else:
                import imageio.v2 as imageio

                imageio.mimwrite(tmp, self.frames, fps=self.cfg.fps, format="FFMPEG")

        runs.write_with(self.path, write)
        self.renderer.close()
        return {"file": self.path.name, "frames": len(self.frames), "fps": self.cfg.fps}


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def joint_rows(summary: dict) -> list[dict]:
    return [{"joint": r["joint"], "RMS error (rad)": f"{r['rms_error_rad']:.2e}", "max error (rad)": f"{r['max_error_rad']:.2e}",
             "overshoot (%)": f"{r['overshoot_pct']:.2f}", "max torque (N·m)": f"{r['max_abs_torque_nm']:.2f}",
             "limit (N·m)": f"{r['torque_limit_nm']:g}", "saturated (%)": f"{100 * r['saturated_share']:.2f}"}
            for r in summary["joints"]]


def tuning_rows(rows: list[dict], markdown: bool = True) -> list[dict]:
    def best(r, text):
        return f"**{text}**" if r.get("best") and markdown else text

    return [{"Kp×": best(r, f"{r['kp_scale']:g}"), "Kd×": best(r, f"{r['kd_scale']:g}"), "Ki×": best(r, f"{r['ki_scale']:g}"),
             "RMS error (rad)": best(r, f"{r['rms_error_rad']:.2e}"), "max error (rad)": f"{r['max_error_rad']:.2e}",
             "saturated (%)": f"{100 * r['saturated_share']:.2f}", "e-stop": (r["estop"] or "").split(" at ")[0],
             **({} if markdown else {"picked": "yes" if r.get("best") else ""})} for r in rows]


def arm_report(summary: dict, plots: list[str], joint_names: list[str]) -> str:
    from labcli.eval.tables import markdown_table

    lines = [
        f"# simulate {summary['robot']} ({summary['controller']})", "",
        f"Task: `{summary['task']}` at {summary['rate_hz']:g} Hz, feed-forward {'on' if summary['feedforward'] else 'off'}.", "",
        f"- RMS tracking error {fmt(summary['rms_error_rad'])} rad, max {fmt(summary['max_error_rad'])} rad, final {fmt(summary['final_error_rad'])} rad",
        f"- settling time {fmt(summary['settling_time_s'])} s (within 1e-3 rad), max overshoot {fmt(summary['max_overshoot_pct'])} %",
        f"- saturated torque {100 * summary['saturated_share']:.2f} % of joint-steps; real-time factor {fmt(summary['real_time_factor'], 3)}x",
        f"- e-stop: {summary['estop_reason'] or 'none'}", "",
        markdown_table(joint_rows(summary)),
    ]
    events = summary["safety_events"]
    if events:
        rows = [{"t (s)": e["t"], "kind": e["kind"], "detail": e["detail"], "e-stop": "yes" if e["estop"] else ""} for e in events[:50]]
        lines += ["## Safety events", "", markdown_table(rows)]
        if len(events) > 50:
            lines.append(f"({len(events) - 50} more in summary.json)\n")
    if "tuning" in summary:
        lines += ["## Gain search", "", markdown_table(tuning_rows(summary["tuning"]))]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots]
    if "video" in summary:
        lines += ["", f"Video: [{summary['video']['file']}]({summary['video']['file']})"]
    lines += ["", "Per-step log: `steps.csv` (t, q, q_ref, qd, tau, error per joint)."]
    return "\n".join(lines) + "\n"


def print_tuning(rows: list[dict]) -> None:
    from labcli.eval.tables import print_table

    print_table(tuning_rows(rows, markdown=False), title="PID gain search (score: RMS tracking error)")


def print_summary(summary: dict) -> None:
    """The run's headline line (the launcher prints the run folder after it)."""
    stop = f"e-stop: {summary['estop_reason']}" if summary["estop"] else "no e-stop"
    print(f"{summary['robot']} {summary['controller']}: RMS error {summary['rms_error_rad']:.2e} rad, "
          f"max {summary['max_error_rad']:.2e} rad, RTF {fmt(summary['real_time_factor'], 3)}x, {stop}")


# ----------------------------------------------------------------------------- policies on scenes (simulate *-dit)

MODE_COLOURS = {"left": "tab:blue", "right": "tab:orange", "none": "0.6", "direct": "0.3"}


def draw_scene(ax, scene) -> None:
    """Top-down: objects in their colours, the obstacle in grey, the start."""
    from matplotlib.patches import Circle, Rectangle

    from labcli.sims.scene import COLOURS

    for thing in scene.objects:
        ax.add_patch(Circle(thing.pos[:2], thing.size[0], color=COLOURS[thing.colour], alpha=0.8))
    for o in scene.obstacles:
        if o.kind == "wall":
            c, s = np.cos(o.yaw), np.sin(o.yaw)
            # Rectangle rotates about its anchor: the corner at -(a, b) in the wall's frame
            corner = np.array(o.pos[:2]) - np.array([c * o.size[0] - s * o.size[1], s * o.size[0] + c * o.size[1]])
            ax.add_patch(Rectangle(corner, 2 * o.size[0], 2 * o.size[1], angle=np.degrees(o.yaw), color="0.35"))
        else:
            ax.add_patch(Circle(o.pos[:2], o.size[0], color="0.35"))
    ax.plot(*scene.start[:2], "ko", ms=4)


def plot_paths(path: Path, tasks: list, samples: list[list[dict]], mlp: list[dict], plans: list[list]) -> Path:
    """End-effector paths seen from above, one panel per blocked scene: the DiT's samples coloured by the
    side they took, the MLP's path, the expert's two plans (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.8), squeeze=False)
    for ax, task, runs_, mlp_run, found in zip(axes[0], tasks, samples, mlp, plans):
        draw_scene(ax, task.scene)
        for plan in found:
            ax.plot(plan.ee[:, 0], plan.ee[:, 1], "k--", lw=1)
        for r in runs_:
            ax.plot(r["ee_path"][:, 0], r["ee_path"][:, 1], color=MODE_COLOURS.get(r["mode"], "0.6"), lw=0.8, alpha=0.7)
        ax.plot(mlp_run["ee_path"][:, 0], mlp_run["ee_path"][:, 1], color="tab:red", lw=2)
        ax.plot(*task.grounding.goal[:2], "k*", ms=10)
        ax.set_aspect("equal")
        ax.set_title(task.instruction[:40], fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("end-effector paths (top view): DiT samples (blue: left, orange: right), MLP-BC (red), expert (dashed)", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_losses(path: Path, metrics: dict[str, list[dict]]) -> Path:
    """Training (line) and validation (markers) loss per policy, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from labcli.eval.plots import save

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, (name, records) in enumerate(metrics.items()):
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        val = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
        if train:
            ax.plot(*zip(*train), color=f"C{i}", label=f"{name} train")
        if val:
            ax.plot(*zip(*val), "o", color=f"C{i}", label=f"{name} validation")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (DiT: noise, MLP: chunk)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, path)


def policy_video(path: Path, sarm, task, start: np.ndarray, image, ex, actors: dict, fps: int = 10, size: tuple[int, int] = (320, 240)) -> Path:
    """One GIF: each actor's episode on the same task in turn, titled in the corner."""
    from types import SimpleNamespace

    from PIL import Image, ImageDraw

    from labcli.sims.rollout import Episode

    settings = SimpleNamespace(format="gif", fps=fps, width=size[0], height=size[1])
    frames = []
    for name, act in actors.items():
        episode = Episode(sarm, task, start, ex, image)
        recorder = VideoRecorder(sarm.arm, settings, path)
        recorder.camera.lookat[:] = [*task.grounding.goal[:2], 0.2]
        recorder.camera.distance, recorder.camera.elevation = 1.6, -35.0
        episode.on_frame, episode.frame_every = recorder.capture, max(1, int(round(1.0 / (fps * ex.dt))))
        while not episode.done:
            episode.advance(act([episode])[0])
        recorder.renderer.close()
        for frame in recorder.frames:
            img = Image.fromarray(frame)
            ImageDraw.Draw(img).text((6, 6), f"{name}: {task.instruction}", fill=(255, 255, 255))
            frames.append(img)

    def write(tmp: str) -> None:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)

    runs.write_with(path, write)
    return Path(path)
