"""Matplotlib (Agg) plots written atomically as PNG."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """The one way lab writes a figure: PNG, atomically; the figure is closed."""
    from labcli import runs

    try:
        return runs.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, bbox_inches="tight"))
    finally:
        _pyplot().close(fig)


def curves(records: list[dict], keys: list[str], path: Path, title: str = "", x: str = "step") -> Path:
    """One line per metric key against `x`, from metrics.jsonl records."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        pts = [(r[x], r[key]) for r in records if key in r and r[key] is not None and x in r]
        if pts:
            ax.plot(*zip(*pts), label=key, marker="." if len(pts) < 30 else None)
    ax.set_xlabel(x)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def bars(groups: dict[str, dict[str, float]], path: Path, title: str = "", ylabel: str = "") -> Path:
    """Grouped bars: {group: {series: value}}."""
    plt = _pyplot()
    import numpy as np

    names = list(groups)
    series = sorted({s for g in groups.values() for s in g})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names)), 3.8))
    width = 0.8 / max(len(series), 1)
    for i, s in enumerate(series):
        ax.bar(np.arange(len(names)) + i * width, [groups[n].get(s, 0) for n in names], width, label=s)
    ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def hbars(panels: dict[str, dict[str, float]], path: Path, title: str = "", xlabel: str = "") -> Path:
    """One horizontal bar chart per panel ({panel title: {label: value}}), largest value on top."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 0.35 * max(map(len, panels.values())) + 1.5),
                             squeeze=False)
    for ax, (name, values) in zip(axes[0], panels.items()):
        items = sorted(values.items(), key=lambda kv: kv[1])
        ax.barh([k[:48] for k, _ in items], [v for _, v in items], color="C0")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(alpha=0.3, axis="x")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def heatmaps(panels: dict[str, list[list[float]]], path: Path, title: str = "", xlabel: str = "", ylabel: str = "",
             xticks: list[str] | None = None, yticks: list[str] | None = None) -> Path:
    """One annotated heatmap per panel ({panel title: rows of values}), side by side."""
    plt = _pyplot()
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels.items()):
        data = np.asarray(values, dtype=float)
        image = ax.imshow(data, cmap="viridis", aspect="auto")
        if data.size <= 64:
            for (i, j), v in np.ndenumerate(data):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < data.max() / 2 else "k")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if xticks is not None and len(xticks) == data.shape[1]:
            ax.set_xticks(range(data.shape[1]), xticks, fontsize=7)
        if yticks is not None and len(yticks) == data.shape[0]:
            ax.set_yticks(range(data.shape[0]), yticks, fontsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def image_grids(panels: dict[str, "object"], path: Path, title: str = "", row_labels: list[str] | None = None) -> Path:
    """One panel per entry ({panel title: images [rows, cols, H, W] in [0, 1]}), each a grid of
    greyscale images side by side, e.g. samples per class (rows) for several guidance scales."""
    plt = _pyplot()
    import numpy as np

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, images) in zip(axes[0], panels.items()):
        a = np.asarray(images, dtype=float)
        rows, cols, h, w = a.shape
        ax.imshow(a.transpose(0, 2, 1, 3).reshape(rows * h, cols * w), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        if row_labels is not None and len(row_labels) == rows:
            ax.set_yticks([h * (r + 0.5) for r in range(rows)], row_labels, fontsize=7)
        else:
            ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save(fig, path)
