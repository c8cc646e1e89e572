"""How a metric is printed, the same everywhere (job lines, the decision table, the registry tables):
MAPE in % with three decimals, RMSE and MAE in MW with one, anything else as a plain number. Light:
imports nothing, so the registry command line can use it."""

from __future__ import annotations


def metric_unit(name: str) -> str:
    """`%` for *_mape, `MW` for *_rmse and *_mae (the scores are in MW, runner.forecast.scoring), else ``."""
    if name.endswith("_mape") or name.startswith("mape"):
        return "%"
    if name.endswith(("_rmse", "_mae")) or name in ("rmse", "mae"):
        return "MW"
    return ""


def format_metric(name: str, value: float | None) -> str:
    """`3.390%`, `812.4 MW`, `0.0123`; `-` for none."""
    if value is None:
        return "-"
    unit = metric_unit(name)
    if unit == "%":
        return f"{value:.3f}%"
    if unit == "MW":
        return f"{value:.1f} MW"
    return f"{value:.4f}"
