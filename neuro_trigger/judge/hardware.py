"""The new network as the trigger hardware computes it, judged beside the float network: its z (and theta)
resolution, its efficiency and background rejection at the cut, and how far it strays from the float network
(the largest and the mean |z_hardware - z_float| in cm, and the tracks whose trigger decision |z| < cut flips).

`judge_hardware` adds "hardware" and "hardware_vs_float" to what `trigger.judge` reports of the same rows; a
run (`judge/expert_results.py`, `judge/assemble.py`), an evaluation and a comparison call it wherever the
networks have a hardware equivalent, and leave both keys out where they have none (`no_hardware_line` says so,
once). The outputs come from `fpga/outputs.py`: bit for bit the trigger's fixed-point arithmetic.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import ColumnStore, theta_to_deg, z_to_cm
from neuro_trigger.fpga.outputs import config_precision, hardware_outputs, no_hardware_reason
from neuro_trigger.judge.metrics import as_2d, finite_rows, loss_value
from neuro_trigger.judge.networks import RunNetworks
from neuro_trigger.judge.trigger import BACKGROUND_CM, IP_CM, TRIGGER_CUT_CM, resolution, trigger_metrics
from neuro_trigger.run.prediction_tables import HardwareColumns


def hardware_vs_float(float_z_cm: np.ndarray, hardware_z_cm: np.ndarray,
                      cut_cm: float = TRIGGER_CUT_CM) -> dict[str, Any]:
    """How far the hardware's z strays from the float network's on the same tracks (rows with a NaN left
    out): the largest and the mean |z_hardware - z_float| in cm, and the tracks whose decision |z| < cut_cm
    differs (`flipped`: those the float network keeps and the hardware drops, and the other way round)."""
    a, b = np.asarray(float_z_cm, np.float64).ravel(), np.asarray(hardware_z_cm, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"lengths differ: {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    diff = np.abs(b - a)
    kept_float, kept_hardware = np.abs(a) < cut_cm, np.abs(b) < cut_cm
    only_float = int(np.count_nonzero(kept_float & ~kept_hardware))
    only_hardware = int(np.count_nonzero(kept_hardware & ~kept_float))
    return {"rows": int(a.size), "cut_cm": float(cut_cm),
            "z_abs_diff_max_cm": float(diff.max()) if a.size else math.nan,
            "z_abs_diff_mean_cm": float(diff.mean()) if a.size else math.nan,
            "flipped": only_float + only_hardware, "kept_by_float_only": only_float,
            "kept_by_hardware_only": only_hardware}


def judge_hardware(target: np.ndarray, pred: np.ndarray, hardware: np.ndarray, loss: str,
                   cut_cm: float = TRIGGER_CUT_CM, ip_cm: float = IP_CM,
                   background_cm: float = BACKGROUND_CM) -> dict[str, Any]:
    """{"hardware": NET, "hardware_vs_float": `hardware_vs_float`} of one set of rows: `target`, `pred` (the
    float network) and `hardware` (its outputs on the hardware, in the same scale) are scaled (N, k) arrays as
    `trigger.judge` takes them. NET holds the loss, the z resolution in cm and (k == 2) the theta resolution in
    degrees (`trigger.resolution`) and `trigger.trigger_metrics` at the cut, on the rows where target, float
    and hardware outputs are finite: the rows judge's "new" uses, since the hardware predicts wherever the float
    network does."""
    p, h, t = as_2d(pred), as_2d(hardware), as_2d(target)
    k = p.shape[1]
    if h.shape != p.shape or t.shape[0] != p.shape[0] or t.shape[1] < k:
        raise ValueError(f"shapes differ: target {t.shape}, pred {p.shape}, hardware {h.shape}")
    ok = finite_rows(t[:, :k], p, h)
    t, p, h = t[ok], p[ok], h[ok]
    reco_z, hardware_z = z_to_cm(t[:, 0]), z_to_cm(h[:, 0])
    net: dict[str, Any] = {"loss": loss_value(h, t[:, :k], loss), "z": resolution(reco_z - hardware_z)}
    if k == 2:
        net["theta"] = resolution(theta_to_deg(t[:, 1]) - theta_to_deg(h[:, 1]))
    net["trigger"] = trigger_metrics(reco_z, hardware_z, cut_cm, ip_cm, background_cm)
    return {"hardware": net, "hardware_vs_float": hardware_vs_float(z_to_cm(p[:, 0]), hardware_z, cut_cm)}


def network_hardware(nets: RunNetworks, store: ColumnStore) -> HardwareColumns:
    """Every network of a run on the hardware, on its expert's rows (a solo network on every row some expert
    takes), as `judge.networks.predict` gives the float outputs; the widths and the activation from each
    expert's config. The networks without a hardware equivalent are in `without`, with why."""
    hardware = HardwareColumns.empty(len(store))
    experts = nets.config.get("experts") or {}
    for expert, net in nets.networks.items():
        key = f"expert_{expert}"
        config = experts.get(key) or {}
        rows = store.expert_rows(expert)
        raw = hardware_outputs(net, config, store.x[rows])
        if raw is None:
            hardware.without[key] = no_hardware_reason(config)
            continue
        k = nets.out_sizes.get(expert, nets.out_size)
        hardware.put(key, rows, raw[:, :k], config_precision(config).node)
    return hardware


def no_hardware_line(without: dict[str, str], who: str = "") -> str:
    """The one line that says which networks have no hardware outputs (`without`: expert -> why), grouped by
    why; "" where every network has them. `who` names the run (a comparison's)."""
    if not without:
        return ""
    by_reason: dict[str, list[str]] = {}
    for key, reason in without.items():
        by_reason.setdefault(reason, []).append(key)
    parts = "; ".join(f"{', '.join(keys)}: {reason}" for reason, keys in by_reason.items())
    return (f"{who + ': ' if who else ''}no hardware columns or measures for {parts} (the trigger runs linear "
            f"layers each followed by tanh/2 or tanh)")
