"""Resolution metrics (units, trimming, loss ratio) and the prediction figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from neuro_trigger.errors import UserError
from neuro_trigger.judge.figure_files import figure_to_array, save_figures
from neuro_trigger.judge.metrics import loss_value, residual_stats, split_metrics, trimmed_std
from neuro_trigger.judge.plots import prediction_figures

Z_NAMES = ["z_vs_reco", "z_pred", "z_residual", "z_residual_std_vs_z", "z_residual_ip"]
THETA_NAMES = ["theta_vs_reco", "theta_pred", "theta_residual", "theta_residual_std_vs_theta"]


def _expected_names(out_size: int) -> set[str]:
    """One figure per name holds both networks: no "-old" twins any more."""
    names = set(Z_NAMES) | {"z-gt"}
    if out_size == 2:
        names |= set(THETA_NAMES) | {"theta-gt"}
    return names


def _synthetic(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    target = np.clip(rng.normal(0.0, 0.3, (n, 2)), -1, 1)
    target[: n // 4, 0] = rng.normal(0.0, 0.003, n // 4)  # some tracks from the interaction point
    return target, target + rng.normal(0, 0.05, (n, 2)), target + rng.normal(0, 0.15, (n, 2))


# --- metrics ---------------------------------------------------------------------------------


def test_trimmed_std_by_hand() -> None:
    x = np.random.default_rng(1).permutation(np.arange(100.0))
    # 5% of 100 = 5 values dropped on each side: 5..94 remain, 90 consecutive integers
    assert trimmed_std(x, 0.05) == pytest.approx(math.sqrt((90**2 - 1) / 12))
    assert trimmed_std(x, 0.0) == pytest.approx(np.std(np.arange(100.0)))
    # five wild outliers in each tail do not matter
    y = np.concatenate([np.arange(90.0), [-1e7, -1e6, -1e5, -1e4, -1e3], [1e3, 1e4, 1e5, 1e6, 1e7]])
    assert trimmed_std(y, 0.05) == pytest.approx(math.sqrt((90**2 - 1) / 12))
    # NaNs ignored, tiny inputs
    assert trimmed_std(np.array([1.0, np.nan, 3.0])) == pytest.approx(1.0)
    assert math.isnan(trimmed_std(np.array([])))
    assert math.isnan(trimmed_std(np.array([np.nan])))


def test_residual_stats() -> None:
    reco = np.array([1.0, 2.0, 3.0, np.nan])
    pred = np.array([0.0, 0.0, 0.0, 1.0])
    s = residual_stats(reco, pred)
    assert s["count"] == 3
    assert s["mean"] == pytest.approx(2.0)
    assert s["std"] == pytest.approx(np.std([1.0, 2.0, 3.0]))


def test_loss_value_matches_formulas() -> None:
    target = np.zeros((2, 2))
    pred = np.array([[0.5, -0.5], [2.0, 0.0]])
    assert loss_value(pred, target, "MSELoss") == pytest.approx((0.25 + 0.25 + 4.0) / 4)
    assert loss_value(pred, target, "L1Loss") == pytest.approx((0.5 + 0.5 + 2.0) / 4)
    # Huber, delta 1: 0.5 d^2 inside, |d| - 0.5 outside
    assert loss_value(pred, target, "HuberLoss") == pytest.approx((0.125 + 0.125 + 1.5) / 4)
    assert math.isnan(loss_value(np.zeros((0, 2)), np.zeros((0, 2)), "MSELoss"))
    with pytest.raises(UserError, match="MSELos"):
        loss_value(pred, target, "MSELos")


def test_split_metrics_perfect_prediction() -> None:
    target, _, old = _synthetic()
    m = split_metrics(target, target.copy(), old, "MSELoss")
    assert m["rows"] == len(target)
    assert m["loss"] == 0.0 and m["loss_vs_old"] == 0.0
    assert m["z_diff_std_cm"] == 0.0 and m["theta_diff_std_deg"] == 0.0
    assert m["old_z_diff_std_cm"] == pytest.approx(15.0, rel=0.1)  # 0.15 scaled = 15 cm
    assert m["old_theta_diff_std_deg"] == pytest.approx(12.0, rel=0.1)  # 0.15 scaled = 12 deg
    json.dumps(m)  # plain Python numbers
    assert all(type(v) in (int, float) for v in m.values())


def test_split_metrics_units_and_ratio() -> None:
    rng = np.random.default_rng(2)
    target = rng.uniform(-0.5, 0.5, (1000, 2))
    pred = target - 0.01  # reco - pred = +0.01 scaled = +1 cm in z, +0.8 deg in theta
    old = target - 0.02
    m = split_metrics(target, pred, old, "MSELoss")
    assert m["loss"] == pytest.approx(1e-4)
    assert m["old_loss"] == pytest.approx(4e-4)
    assert m["loss_vs_old"] == pytest.approx(0.25)
    assert m["z_diff_mean_cm"] == pytest.approx(1.0)
    assert m["z_diff_std_cm"] == pytest.approx(0.0, abs=1e-9)


def test_split_metrics_spread_in_cm_and_deg() -> None:
    target = np.random.default_rng(3).uniform(-0.5, 0.5, (1000, 2))
    sign = np.where(np.arange(1000) % 2 == 0, 1.0, -1.0)
    pred = target + 0.01 * sign[:, None]  # residual +-0.01 scaled: std 1 cm, 0.8 deg
    old = target + 0.02 * sign[:, None]  # std 2 cm, 1.6 deg
    m = split_metrics(target, pred, old, "L1Loss")
    assert m["z_diff_std_cm"] == pytest.approx(1.0)
    assert m["z_diff_trimmed_std_cm"] == pytest.approx(1.0)
    assert m["old_z_diff_std_cm"] == pytest.approx(2.0)
    assert m["old_z_diff_trimmed_std_cm"] == pytest.approx(2.0)
    assert m["z_diff_std_vs_old"] == pytest.approx(0.5)
    assert m["theta_diff_std_deg"] == pytest.approx(0.8)
    assert m["theta_diff_trimmed_std_deg"] == pytest.approx(0.8)
    assert m["old_theta_diff_std_deg"] == pytest.approx(1.6)
    assert m["loss_vs_old"] == pytest.approx(0.5)


def test_split_metrics_z_only_and_nan_rows() -> None:
    target, pred, old = _synthetic(500)
    pred = pred.copy()
    pred[:10] = np.nan
    m = split_metrics(target[:, :1], pred[:, :1], old, "HuberLoss")
    assert "theta_diff_std_deg" not in m
    assert m["rows"] == 500
    assert math.isfinite(m["loss"]) and math.isfinite(m["z_diff_std_cm"])
    ok = split_metrics(target[10:, :1], pred[10:, :1], old[10:], "HuberLoss")
    assert m["loss"] == pytest.approx(ok["loss"])
    assert m["z_diff_std_cm"] == pytest.approx(ok["z_diff_std_cm"])


def test_split_metrics_empty() -> None:
    e = np.zeros((0, 2))
    m = split_metrics(e, e, e, "MSELoss")
    assert m["rows"] == 0
    assert all(math.isnan(v) for k, v in m.items() if k not in ("rows", "rows_without_old"))
    assert m["rows_without_old"] == 0
    assert "theta_diff_trimmed_std_deg" in m


# --- plots -----------------------------------------------------------------------------------


@pytest.mark.parametrize("out_size", [1, 2])
def test_prediction_figure_names_and_units(out_size: int) -> None:
    target, pred, old = _synthetic()
    figs = prediction_figures(target[:, :out_size], pred[:, :out_size], old, out_size)
    assert set(figs) == _expected_names(out_size)
    axis_labels = " ".join(ax.get_xlabel() + ax.get_ylabel() for f in figs.values() for ax in f.axes)
    assert "[cm]" in axis_labels
    assert ("[deg]" in axis_labels) == (out_size == 2)


def test_saved_pngs_are_real_plots(tmp_path: Path) -> None:
    target, pred, old = _synthetic()
    pred[:5] = np.nan
    figs = prediction_figures(target, pred, old, 2)
    paths = save_figures(figs, tmp_path / "plots")
    assert {p.name for p in paths} == {f"{n}.png" for n in figs}
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size > 8000, p.name  # axes, labels and data, not a blank canvas


def test_residual_legend_reports_statistics() -> None:
    target, pred, old = _synthetic()
    figs = prediction_figures(target, pred, old, 2)
    legend = figs["z_residual"].axes[0].get_legend()
    text = " ".join(t.get_text() for t in legend.get_texts())
    n = len(target)
    assert f"count {n}" in text and "mean" in text and "trimmed std" in text
    expected_std = np.std((target[:, 0] - pred[:, 0]) * 100)
    assert f"std {expected_std:.3g} cm" in text


def test_figure_to_array() -> None:
    target, pred, old = _synthetic(300)
    figs = prediction_figures(target, pred, old, 1)
    img = figure_to_array(figs["z_residual"])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[:2] == (480, 640)
    assert img.std() > 10  # not a blank image
    wide = figure_to_array(figs["z_vs_reco"])  # the new and the old network side by side
    assert wide.shape[0] == 480 and wide.shape[1] > 1000


def test_empty_input(tmp_path: Path) -> None:
    e = np.zeros((0, 2))
    figs = prediction_figures(e, e, e, 2)
    assert set(figs) == _expected_names(2)
    assert len(save_figures(figs, tmp_path)) == len(figs)  # drawing every figure does not fail


def test_tiny_input_with_nan_rows() -> None:
    target, pred, old = _synthetic(2)
    pred[0] = np.nan  # one usable row left for the new network
    old *= np.nan  # no usable old-network row at all
    figs = prediction_figures(target, pred, old, 2)
    assert set(figs) == _expected_names(2)
    # the figures with the most special cases (log colour scale, per-bin spread, statistics legend)
    for name in ("z_residual", "z_residual_std_vs_z", "theta_residual_std_vs_theta"):
        assert figure_to_array(figs[name]).shape == (480, 640, 3)
    assert figure_to_array(figs["z_vs_reco"]).shape[0] == 480
