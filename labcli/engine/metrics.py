"""Live training output: metrics.jsonl, a rich progress bar, TensorBoard and W&B (offline)."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class LiveLog:
    """One place for every metric sink. Only rank 0 writes."""

    def __init__(self, run, cfg, total: int, start: int, enabled: bool, progress: bool = True):
        self.run, self.enabled = run, enabled
        self.progress = self.task = self.tb = self.wandb = None
        if not enabled:
            return
        self.progress = Progress(
            TextColumn(f"[bold]{run.verb} {run.recipe}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[tps]:.0f} tok/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), transient=False, disable=not progress,
        )
        self.task = self.progress.add_task("train", total=total, completed=start, loss=float("nan"), tps=0.0)
        self.progress.start()
        if getattr(cfg, "tensorboard", False):
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run.dir / "tensorboard"))
            except ImportError:
                pass
        if getattr(cfg, "wandb", False):
            try:
                import wandb

                self.wandb = wandb.init(mode="offline", dir=str(run.dir), name=run.dir.name, config=run.cfg.model_dump())
            except ImportError:
                pass

    def log(self, step: int, **metrics) -> None:
        if not self.enabled:
            return
        metrics = {k: v for k, v in metrics.items() if v is not None}
        self.run.log(step=step, **metrics)
        if "loss" in metrics:
            self.progress.update(self.task, completed=step, loss=metrics["loss"], tps=metrics.get("tokens_per_s", 0.0))
        for key, value in metrics.items():
            if self.tb is not None and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def note(self, text: str) -> None:
        if self.enabled:
            self.progress.console.print(text)

    def close(self) -> None:
        if not self.enabled:
            return
        self.progress.stop()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
