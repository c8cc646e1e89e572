"""The run's figures (matplotlib, headless): learning curve and forecast against actual demand."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(history: dict[str, list[float]], best_epoch: int, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for key in ("loss", "val_loss"):
        if history.get(key):
            ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=key)
    if best_epoch:
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    ax.set(xlabel="epoch", ylabel="loss (level-normalised)", title="Learning curve")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def forecast_vs_actual(
    timestamps, actual_mw: np.ndarray, forecast_mw: np.ndarray, lead: int, path: Path, title: str
) -> Path:
    """Demand over the test weeks against the forecast made `lead` half-hours ahead."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(timestamps, actual_mw, color="black", linewidth=0.8, label="actual")
    ax.plot(timestamps, forecast_mw, color="tab:orange", linewidth=0.8, label=f"forecast, lead {lead}")
    ax.set(ylabel="demand (MW)", title=title)
    ax.legend(loc="upper right")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def mape_by_lead(curves: dict[str, np.ndarray], path: Path, title: str = "MAPE by lead time") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4 + 0.25 * len(curves)))
    for label, values in curves.items():
        ax.plot(np.arange(1, len(values) + 1), values, label=f"{label} (mean {np.mean(values):.2f}%)")
    ax.set(xlabel="lead time (half-hours)", ylabel="MAPE (%)", title=title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize="small")  # below: never over a curve
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
