"""What every RL training loop does around its updates: metrics, progress, checkpoints, resume.

ppo.train and dqn.train own their algorithm; `RunLog` owns the run. Each finished episode and each
update's statistics go to metrics.jsonl with `step` = env frames so far. Checkpoints go through the
engine's checkpoint module (weights, optimizer, every RNG state, the step) with the loop's own
state in `extra` (envs as replay records, DQN's target network and replay buffer). Resuming
restores all of it and truncates metrics.jsonl to the checkpoint's step, so the rows a killed run
logged after its last checkpoint are not logged twice and a resumed run equals an unbroken one.
"""

from __future__ import annotations

from labcli import runs
from labcli.engine import checkpoint
from labcli.rl.common import episodes, progress_bar, recent_return


class RunLog:
    """Metrics, progress bar and checkpoints of one RL training run (`run` may be None: nothing is written)."""

    def __init__(self, run, total_frames: int, label: str, checkpoint_every: int = 0, progress: bool = True):
        self.run, self.total, self.every = run, total_frames, checkpoint_every
        self.history: list[dict] = []
        self.bar = progress_bar(label, total_frames, enabled=progress and (run is None or run.is_main))

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)

    def resume(self, model, optimizer) -> dict | None:
        """Load run.resume_from into model and optimizer; returns the loop's saved state, or None."""
        if self.run is None or self.run.resume_from is None:
            return None
        state = checkpoint.load(self.run.resume_from, model, optimizer, None)
        if self.run.is_main:
            runs.truncate_jsonl(self.run.metrics_path, state["step"])
        self.history = episodes(self.run.metrics())
        self.bar.advance(state["step"], recent_return(self.history))
        return state

    def episode(self, frames: int, episode_return: float, length: int) -> None:
        row = {"step": frames, "episode_return": round(episode_return, 4), "episode_length": length}
        self.history.append(row)
        if self.run is not None:
            self.run.log(**row)

    def update(self, frames: int, stats: dict) -> None:
        self.tick(frames)
        if self.run is not None:
            self.run.log(step=frames, **{k: round(v, 5) for k, v in stats.items()})

    def tick(self, frames: int) -> None:
        self.bar.advance(frames, recent_return(self.history))

    def checkpoint_due(self, frames: int, previous: int) -> bool:
        """A checkpoint every `checkpoint_every` frames (at the first boundary past each multiple) and at the end."""
        if self.run is None or self.every <= 0:
            return False
        return frames // self.every > previous // self.every or frames >= self.total

    def save(self, frames: int, model, optimizer, extra: dict) -> None:
        checkpoint.save(self.run.dir / "checkpoints", frames, model, optimizer, None, extra, self.run.config_yaml(), keep_last=1)
