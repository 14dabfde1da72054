"""The trigger's view of a network (run/metrics.py), each metric against numbers worked out by hand on a small
table, its edge cases, and the "trigger" / "trigger_all" parts every run writes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from neuro_trigger.data.dataset import theta_from_deg, z_from_cm
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.errors import UserError
from neuro_trigger.judge.trigger import (
    EXPERT_BIN_EDGES,
    NTRACKS_BIN_EDGES,
    ROC_CUTS_CM,
    THETA_BIN_EDGES_DEG,
    Z_BIN_EDGES_CM,
    _bin_index,
    binned_resolution,
    efficiency_vs_z,
    judge,
    resolution,
    roc_curve,
    trigger_metrics,
)

nan = math.nan


def _std(values: list[float], ddof: int = 0) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - ddof))


# ---------------------------------------------------------------------------------------------- the z cut
# 10 tracks plus one without a prediction. IP tracks (|reco z| < 1 cm): 4, of which |pred| < 15 keeps 3
# (16 cm is cut away); background (|reco z| > 20 cm): 3, of which the cut removes 2 (40 cm, and 15 cm: the
# cut is strict); reco z of exactly 1 cm and 20 cm belongs to neither; the NaN row counts nowhere.
RECO = [0.0, 0.5, -0.5, 0.9, 30.0, -50.0, 25.0, 1.0, 20.0, -5.0, 0.2]
PRED = [2.0, -10.0, 14.9, 16.0, 40.0, -14.0, 15.0, 0.0, 0.0, 0.0, nan]


def test_efficiency_and_rejection_by_hand():
    m = trigger_metrics(np.array(RECO), np.array(PRED))
    assert m["cut_cm"] == 15.0
    assert (m["ip_tracks"], m["background_tracks"]) == (4, 3)
    assert m["efficiency"] == pytest.approx(3 / 4)
    assert m["efficiency_err"] == pytest.approx(math.sqrt(3 / 4 * 1 / 4 / 4))  # sqrt(p (1 - p) / n)
    assert m["rejection"] == pytest.approx(2 / 3)
    assert m["rejection_err"] == pytest.approx(math.sqrt(2 / 3 * 1 / 3 / 3))


def test_other_cut_and_thresholds():
    # cut 20: every IP track kept; background: 40 removed, 14 and 15 kept
    m = trigger_metrics(np.array(RECO), np.array(PRED), cut_cm=20.0)
    assert (m["efficiency"], m["rejection"]) == (pytest.approx(1.0), pytest.approx(1 / 3))
    assert m["efficiency_err"] == 0.0
    # IP region 0.6 cm: 0.0, 0.5, -0.5 (all kept); background beyond 28 cm: 30 (removed) and -50 (kept)
    m = trigger_metrics(np.array(RECO), np.array(PRED), ip_cm=0.6, background_cm=28.0)
    assert (m["ip_tracks"], m["background_tracks"]) == (3, 2)
    assert (m["efficiency"], m["rejection"]) == (pytest.approx(1.0), pytest.approx(1 / 2))


def test_no_ip_tracks_no_background_tracks_and_empty_input():
    m = trigger_metrics(np.array([30.0, 5.0]), np.array([0.0, 0.0]))  # no IP track; the far one is kept
    assert m["ip_tracks"] == 0 and math.isnan(m["efficiency"]) and math.isnan(m["efficiency_err"])
    assert (m["background_tracks"], m["rejection"], m["rejection_err"]) == (1, 0.0, 0.0)
    m = trigger_metrics(np.array([0.0, 5.0]), np.array([0.0, 30.0]))  # no background track
    assert m["background_tracks"] == 0 and math.isnan(m["rejection"]) and m["efficiency"] == 1.0
    m = trigger_metrics(np.zeros(0), np.zeros(0))
    assert (m["ip_tracks"], m["background_tracks"]) == (0, 0)
    assert math.isnan(m["efficiency"]) and math.isnan(m["rejection"])


def test_roc_points_by_hand():
    # IP |pred|: 2, 10, 14.9, 16; background |pred|: 40, 14, 15 (kept: |pred| < cut)
    roc = roc_curve(np.array(RECO), np.array(PRED), cuts_cm=np.array([1.0, 10.0, 15.0, 15.5, 50.0]))
    assert roc["cut_cm"] == [1.0, 10.0, 15.0, 15.5, 50.0]
    assert roc["efficiency"] == pytest.approx([0.0, 1 / 4, 3 / 4, 3 / 4, 1.0])
    assert roc["rejection"] == pytest.approx([1.0, 1.0, 2 / 3, 1 / 3, 0.0])
    # cuts in any order (and repeated) come back in that order
    roc = roc_curve(np.array(RECO), np.array(PRED), cuts_cm=np.array([15.0, 1.0, 50.0, 15.0]))
    assert roc["efficiency"] == pytest.approx([3 / 4, 0.0, 1.0, 3 / 4])
    assert roc["rejection"] == pytest.approx([2 / 3, 1.0, 0.0, 2 / 3])


def test_roc_default_cuts_agree_with_the_single_cut():
    rng = np.random.default_rng(3)
    reco = np.concatenate([rng.normal(0, 0.5, 3000), rng.uniform(-100, 100, 3000)])
    pred = reco + rng.normal(0, 12, reco.size)
    pred[::50] = np.round(pred[::50])  # some on a cut exactly
    roc = roc_curve(reco, pred)
    assert roc["cut_cm"] == list(ROC_CUTS_CM) == [float(c) for c in range(1, 61)]
    for j in (0, 9, 14, 29, 59):
        m = trigger_metrics(reco, pred, cut_cm=ROC_CUTS_CM[j])
        assert roc["efficiency"][j] == pytest.approx(m["efficiency"])
        assert roc["rejection"][j] == pytest.approx(m["rejection"])
    assert np.all(np.diff(roc["efficiency"]) >= 0) and np.all(np.diff(roc["rejection"]) <= 0)


def test_roc_without_ip_or_background_tracks():
    roc = roc_curve(np.array([5.0]), np.array([1.0]))
    assert len(roc["efficiency"]) == 60 and all(math.isnan(v) for v in roc["efficiency"] + roc["rejection"])
    roc = roc_curve(np.zeros(0), np.zeros(0), cuts_cm=np.array([1.0, 2.0]))
    assert roc["cut_cm"] == [1.0, 2.0] and all(math.isnan(v) for v in roc["efficiency"] + roc["rejection"])


def test_efficiency_vs_z_by_hand():
    e = efficiency_vs_z(np.array(RECO), np.array(PRED), edges_cm=np.array([-60.0, -20.0, 0.0, 20.0, 60.0]))
    # [-60, -20): -50 kept. [-20, 0): -0.5, -5 kept. [0, 20): 0, 0.5, 1 kept, 0.9 not. [20, 60]: 20 kept,
    # 30 and 25 not (20 is a left edge, so it lies in the last bin).
    assert e["edges"] == [-60.0, -20.0, 0.0, 20.0, 60.0]
    assert e["count"] == [1, 2, 4, 3]
    assert e["efficiency"] == pytest.approx([1.0, 1.0, 3 / 4, 1 / 3])
    assert e["efficiency_err"] == pytest.approx([0.0, 0.0, math.sqrt(3 / 4 * 1 / 4 / 4), math.sqrt(1 / 3 * 2 / 3 / 3)])
    e = efficiency_vs_z(np.array([60.0, 61.0, -61.0, 0.0]), np.array([0.0, 0.0, 0.0, 50.0]),
                        edges_cm=np.array([-60.0, 0.0, 60.0]))
    assert e["count"] == [0, 2]  # 60 in the last bin (closed), 61 and -61 outside
    assert math.isnan(e["efficiency"][0]) and math.isnan(e["efficiency_err"][0])
    assert e["efficiency"][1] == 0.5
    default = efficiency_vs_z(np.array(RECO), np.array(PRED))
    assert default["edges"] == list(Z_BIN_EDGES_CM) and sum(default["count"]) == 10


# ---------------------------------------------------------------------------------------------- resolution
def test_resolution_by_hand():
    r = resolution(np.array([1.0, 2.0, 3.0, 4.0, 10.0, nan]))
    assert r["count"] == 5
    assert r["mean"] == pytest.approx(4.0)
    assert r["median"] == pytest.approx(3.0)
    assert r["std"] == pytest.approx(math.sqrt((9 + 4 + 1 + 0 + 36) / 5))
    assert r["trimmed_std"] == r["std"]  # 5% of 5 values: none dropped
    # the 15.865% and 84.135% quantiles, linear between order statistics at positions 4 q:
    # 0.6346 -> 1 + 0.6346 (2 - 1); 3.3654 -> 4 + 0.3654 (10 - 4)
    assert r["half_width_68"] == pytest.approx(((4 + 0.3654 * 6) - (1 + 0.6346)) / 2)
    trimmed = resolution(np.array([1.0, 2.0, 3.0, 4.0, 10.0]), trim=0.2)  # one value dropped on each side
    assert trimmed["trimmed_std"] == pytest.approx(math.sqrt(2 / 3))  # std of 2, 3, 4


def test_resolution_of_a_gaussian_with_tails():
    rng = np.random.default_rng(5)
    r = np.concatenate([rng.normal(1.0, 2.0, 200_000), rng.uniform(-200, 200, 4_000)])
    res = resolution(r)
    assert res["half_width_68"] == pytest.approx(2.0 * 1.0, rel=0.05)  # robust: near the core's sigma
    assert res["std"] > 10  # the tails dominate the plain std
    # 5% dropped on each side: the tails go, and a Gaussian trimmed so keeps about 0.79 of its sigma
    assert 1.4 < res["trimmed_std"] < 2.0
    assert res["median"] == pytest.approx(1.0, abs=0.05)


def test_resolution_empty_and_single():
    empty = resolution(np.zeros(0))
    assert empty["count"] == 0 and all(math.isnan(empty[k]) for k in ("std", "half_width_68", "mean", "median"))
    one = resolution(np.array([2.5]))
    assert (one["count"], one["mean"], one["median"], one["std"], one["half_width_68"]) == (1, 2.5, 2.5, 0.0, 0.0)


def test_binned_resolution_by_hand():
    x = np.array([0.5, 1.5, 1.2, 2.5, 2.7, 2.9, 3.0, 5.0, -1.0, nan, 1.1])
    r = np.array([7.0, 1.0, 3.0, 2.0, 4.0, 9.0, 1.0, 100.0, 100.0, 100.0, nan])
    b = binned_resolution(x, r, np.array([0.0, 1.0, 2.0, 3.0]))
    # bin [0, 1): 7. bin [1, 2): 1, 3 (1.1 has no residual). bin [2, 3]: 2, 4, 9, 1 (3.0: the last edge).
    assert b["count"] == [1, 2, 4]
    assert b["mean"] == pytest.approx([7.0, 2.0, 4.0])
    assert b["median"] == pytest.approx([7.0, 2.0, 3.0])
    s1, s2 = math.sqrt(2.0), math.sqrt((4 + 0 + 25 + 9) / 3)  # std with n - 1
    assert math.isnan(b["std"][0]) and math.isnan(b["mean_err"][0]) and math.isnan(b["std_err"][0])
    assert b["std"][1:] == pytest.approx([s1, s2])
    assert b["mean_err"][1:] == pytest.approx([s1 / math.sqrt(2), s2 / math.sqrt(4)])  # std / sqrt(n)
    assert b["std_err"][1:] == pytest.approx([s1 / math.sqrt(2 * 1), s2 / math.sqrt(2 * 3)])  # std / sqrt(2 (n-1))
    empty = binned_resolution(np.array([0.5]), np.array([1.0]), np.array([0.0, 1.0, 2.0]))
    assert empty["count"] == [1, 0] and math.isnan(empty["mean"][1]) and math.isnan(empty["median"][1])
    nothing = binned_resolution(np.zeros(0), np.zeros(0), np.array([0.0, 1.0]))
    assert nothing["count"] == [0] and nothing["edges"] == [0.0, 1.0]


@pytest.mark.parametrize("edges", [Z_BIN_EDGES_CM, THETA_BIN_EDGES_DEG, NTRACKS_BIN_EDGES, EXPERT_BIN_EDGES,
                                   np.linspace(-1.0, 1.0, 8), np.array([-3.0, 0.1, 0.2, 7.0])])
def test_bins_agree_with_numpy_histogram(edges):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(edges[0] - 5, edges[-1] + 5, 5000), edges, np.round(rng.normal(0, 30, 500))])
    r = rng.normal(0, 1, x.size)
    assert binned_resolution(x, r, edges)["count"] == np.histogram(x, edges)[0].tolist()
    integers = rng.integers(-3, 40, 2000)
    assert binned_resolution(integers, r[:2000], edges)["count"] == np.histogram(integers, edges)[0].tolist()
    index = _bin_index(x, edges)
    assert index[x < edges[0]].tolist() == [-1] * int((x < edges[0]).sum())
    assert set(index[x > edges[-1]].tolist()) <= {edges.size - 1}


# ---------------------------------------------------------------------------------------------- judge
# 8 rows in cm / degrees; row 3 has no old output, row 6 no prediction (cut 15 cm, IP 1 cm, background 20 cm)
#            reco z, pred z, old z, reco th, pred th, old th, expert, ntracks
TABLE = [
    (0.0, 2.0, 10.0, 90.0, 92.0, 80.0, 0, 1),
    (0.5, 16.0, 0.0, 60.0, 58.0, 60.0, 1, 2),
    (-0.5, 3.0, 20.0, 120.0, 125.0, 120.0, 2, 3),
    (32.0, 40.0, nan, 40.0, 40.0, nan, 0, 4),
    (-52.0, -10.0, -60.0, 100.0, 100.0, 110.0, 3, 5),
    (5.0, 4.0, 8.0, 80.0, 80.0, 85.0, 4, 6),
    (0.2, nan, 1.0, 90.0, nan, 90.0, 0, 7),
    (42.0, 10.0, 50.0, 70.0, 70.0, 75.0, 1, 9),
]
NEW_Z = [-2.0, -15.5, -3.5, -8.0, -42.0, 1.0, 32.0]  # reco - pred on the 7 rows with a prediction
NEW_THETA = [-2.0, 2.0, -5.0, 0.0, 0.0, 0.0, 0.0]
OLD_Z = [-10.0, 0.5, -20.5, 8.0, -3.0, -8.0]  # reco - old on the 6 rows both cover (0, 1, 2, 4, 5, 7)
OLD_THETA = [10.0, 0.0, 0.0, -10.0, -5.0, -5.0]
NEW_Z_BOTH = [-2.0, -15.5, -3.5, -42.0, 1.0, 32.0]
NEW_THETA_BOTH = [-2.0, 2.0, -5.0, 0.0, 0.0, 0.0]


def _table() -> dict[str, np.ndarray]:
    a = np.array([row[:6] for row in TABLE])
    return {"target": np.column_stack([z_from_cm(a[:, 0]), theta_from_deg(a[:, 3])]),
            "pred": np.column_stack([z_from_cm(a[:, 1]), theta_from_deg(a[:, 4])]),
            "old": np.column_stack([z_from_cm(a[:, 2]), theta_from_deg(a[:, 5])]),
            "expert": np.array([row[6] for row in TABLE]), "ntracks": np.array([row[7] for row in TABLE])}


def _mse(z_cm: list[float], theta_deg: list[float] | None) -> float:
    """MSELoss in scaled units: z / 100 cm, theta / 80 degrees, averaged over every entry."""
    squares = [(v / 100) ** 2 for v in z_cm] + [(v / 80) ** 2 for v in theta_deg or []]
    return sum(squares) / len(squares)


def _json_safe(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_json_safe(v) for v in value)
    return type(value) in (int, float, str)


@pytest.fixture(scope="module")
def judged() -> dict:
    t = _table()
    return judge(t["target"], t["pred"], t["old"], "MSELoss", t["expert"], t["ntracks"])


def test_judge_rows_and_structure(judged):
    assert (judged["rows"], judged["rows_without_old"], judged["cut_cm"]) == (8, 1, 15.0)
    assert judged["vs_old"]["rows"] == 6
    for net in ("new", "old"):
        assert set(judged[net]) == {"loss", "z", "theta", "trigger", "roc", "efficiency_vs_z", "z_vs_reco_z",
                                    "z_vs_reco_theta", "z_vs_expert", "z_vs_ntracks"}
    assert _json_safe(judged)
    json.dumps(judged)


def test_judge_new_network_by_hand(judged):
    new = judged["new"]
    assert new["z"]["count"] == 7
    assert new["z"]["mean"] == pytest.approx(-38 / 7)
    assert new["z"]["median"] == pytest.approx(-3.5)
    assert new["z"]["std"] == pytest.approx(_std(NEW_Z))
    assert new["theta"]["mean"] == pytest.approx(-5 / 7)
    assert new["theta"]["std"] == pytest.approx(_std(NEW_THETA))
    assert new["loss"] == pytest.approx(_mse(NEW_Z, NEW_THETA))
    # IP rows 0, 1, 2: |pred| 2, 16, 3 -> 2 of 3 kept; background rows 3, 4, 7: |pred| 40, 10, 10 -> 1 of 3 removed
    trigger = new["trigger"]
    assert (trigger["ip_tracks"], trigger["background_tracks"]) == (3, 3)
    assert (trigger["efficiency"], trigger["rejection"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert trigger["efficiency_err"] == pytest.approx(math.sqrt(2 / 3 * 1 / 3 / 3))
    roc = new["roc"]  # roc[j] is the cut j + 1 cm
    assert [roc["efficiency"][j] for j in (0, 2, 3, 19)] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert [roc["rejection"][j] for j in (0, 9, 10, 19, 40)] == pytest.approx([1.0, 1.0, 1 / 3, 1 / 3, 0.0])


def test_judge_old_network_and_ratios_on_the_rows_both_cover(judged):
    old = judged["old"]
    assert old["z"]["count"] == 6 and old["theta"]["count"] == 6
    assert old["z"]["mean"] == pytest.approx(-5.5) and old["z"]["median"] == pytest.approx(-5.5)
    assert old["z"]["std"] == pytest.approx(_std(OLD_Z))
    assert old["theta"]["std"] == pytest.approx(_std(OLD_THETA))
    assert old["loss"] == pytest.approx(_mse(OLD_Z, OLD_THETA))
    # IP rows: |old| 10, 0, 20 -> 2 of 3 kept; background rows 4, 7: |old| 60, 50 -> both removed
    assert (old["trigger"]["efficiency"], old["trigger"]["rejection"]) == (pytest.approx(2 / 3), 1.0)
    assert old["trigger"]["background_tracks"] == 2
    vs = judged["vs_old"]
    assert vs["loss"] == pytest.approx(_mse(NEW_Z_BOTH, NEW_THETA_BOTH) / _mse(OLD_Z, OLD_THETA))
    assert vs["z_std"] == pytest.approx(_std(NEW_Z_BOTH) / _std(OLD_Z))
    half_width = resolution(np.array(NEW_Z_BOTH))["half_width_68"] / resolution(np.array(OLD_Z))["half_width_68"]
    assert vs["z_half_width_68"] == pytest.approx(half_width)
    # on rows 0, 1, 2, 4, 5, 7 the new network keeps 2 of 3 IP tracks (as the old) and removes neither
    # background track (the old removes both)
    assert vs["efficiency_diff"] == pytest.approx(0.0)
    assert vs["rejection_diff"] == pytest.approx(-1.0)


def test_judge_binned_by_hand(judged):
    new, old = judged["new"], judged["old"]
    # experts -1, 0, ..., 4 of the 7 new rows: 0 1 2 0 3 4 1; of the 6 old rows: 0 1 2 3 4 1
    assert new["z_vs_expert"]["edges"] == [-1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5]
    assert new["z_vs_expert"]["count"] == [0, 2, 2, 1, 1, 1]
    assert old["z_vs_expert"]["count"] == [0, 1, 2, 1, 1, 1]
    e0 = new["z_vs_expert"]  # expert 0: residuals -2, -8
    assert e0["mean"][1] == pytest.approx(-5.0) and e0["std"][1] == pytest.approx(math.sqrt(18))
    assert e0["mean_err"][1] == pytest.approx(3.0) and e0["std_err"][1] == pytest.approx(3.0)
    assert e0["mean"][2] == pytest.approx((-15.5 + 32) / 2)
    assert new["z_vs_ntracks"]["count"] == [1, 1, 1, 2, 1, 1, 0]  # ntracks 1 2 3 4 5 6 9
    assert new["z_vs_reco_theta"]["count"] == [0, 1, 1, 2, 2, 1, 0, 0]  # 90 60 120 40 100 80 70 degrees
    by_z = new["z_vs_reco_z"]  # 10 cm bins from -100: -52 -> 4, -0.5 -> 9, 0 0.5 5 -> 10, 32 -> 13, 42 -> 14
    assert [i for i, c in enumerate(by_z["count"]) if c] == [4, 9, 10, 13, 14]
    assert by_z["count"][10] == 3 and by_z["mean"][10] == pytest.approx(-5.5)
    assert by_z["std"][10] == pytest.approx(math.sqrt((3.5**2 + 10**2 + 6.5**2) / 2))
    assert by_z["median"][10] == pytest.approx(-2.0)
    eff = new["efficiency_vs_z"]  # bin 10: |pred| 2, 16, 4 -> 2 of 3 kept; bin 13: 40 -> 0; bin 14: 10 -> 1
    assert [eff["efficiency"][i] for i in (4, 9, 10, 13, 14)] == pytest.approx([1.0, 1.0, 2 / 3, 0.0, 1.0])
    assert math.isnan(eff["efficiency"][0]) and eff["count"][0] == 0


def test_judge_out_size_1():
    t = _table()
    j = judge(t["target"][:, :1], t["pred"][:, :1], t["old"][:, :1], "MSELoss", t["expert"], t["ntracks"])
    assert "theta" not in j["new"] and "theta" not in j["old"]
    assert j["new"]["loss"] == pytest.approx(_mse(NEW_Z, None))
    assert j["vs_old"]["loss"] == pytest.approx(_mse(NEW_Z_BOTH, None) / _mse(OLD_Z, None))
    assert sum(j["new"]["z_vs_reco_theta"]["count"]) == 0  # no reco theta given
    # the full (N, 2) target with a z-only prediction still bins z by reco theta
    j = judge(t["target"], t["pred"][:, :1], t["old"], "MSELoss", t["expert"], t["ntracks"])
    assert "theta" not in j["new"] and j["new"]["z_vs_reco_theta"]["count"] == [0, 1, 1, 2, 2, 1, 0, 0]
    assert j["new"]["loss"] == pytest.approx(_mse(NEW_Z, None))


def test_judge_cut_and_thresholds_pass_through():
    t = _table()
    j = judge(t["target"], t["pred"], t["old"], "MSELoss", t["expert"], t["ntracks"], cut_cm=20.0, ip_cm=0.4,
              background_cm=45.0)
    assert j["cut_cm"] == 20.0
    # IP rows (|reco| < 0.4): row 0 only (row 6 has no prediction); background (|reco| > 45): row 4
    assert (j["new"]["trigger"]["ip_tracks"], j["new"]["trigger"]["background_tracks"]) == (1, 1)
    assert j["new"]["trigger"]["efficiency"] == 1.0  # |pred| 2 < 20: kept
    assert j["new"]["trigger"]["rejection"] == 0.0  # |pred| 10 < 20: kept
    assert j["new"]["efficiency_vs_z"]["efficiency"][10] == 1.0  # |pred| 2, 16, 4: all below 20
    assert j["new"]["roc"]["efficiency"][0] == 0.0  # the ROC's own IP region: row 0 only, |pred| 2 > 1


def test_judge_without_any_old_output_and_without_predictions():
    t = _table()
    j = judge(t["target"], t["pred"], np.full((8, 2), np.nan), "MSELoss", t["expert"], t["ntracks"])
    assert (j["rows"], j["rows_without_old"], j["vs_old"]["rows"]) == (8, 7, 0)
    assert j["new"]["z"]["count"] == 7 and j["old"]["z"]["count"] == 0
    assert math.isnan(j["old"]["loss"]) and math.isnan(j["vs_old"]["loss"]) and math.isnan(j["vs_old"]["z_std"])
    assert sum(j["old"]["z_vs_expert"]["count"]) == 0
    j = judge(t["target"], np.full((8, 2), np.nan), t["old"], "MSELoss", t["expert"], t["ntracks"])
    assert (j["rows"], j["rows_without_old"]) == (8, 0)
    assert j["new"]["z"]["count"] == 0 and j["old"]["z"]["count"] == 0  # old judged only where both are
    assert math.isnan(j["new"]["trigger"]["efficiency"])


def test_judge_empty_input():
    z = np.zeros((0, 2))
    j = judge(z, z, z, "MSELoss", np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert (j["rows"], j["rows_without_old"], j["vs_old"]["rows"]) == (0, 0, 0)
    assert j["new"]["z"]["count"] == 0 and math.isnan(j["new"]["loss"]) and math.isnan(j["vs_old"]["z_std"])
    assert sum(j["new"]["efficiency_vs_z"]["count"]) == 0 and sum(j["old"]["z_vs_ntracks"]["count"]) == 0
    assert _json_safe(j)


def test_judge_bad_arguments():
    t = _table()
    args = (t["target"], t["pred"], t["old"], "MSELoss", t["expert"], t["ntracks"])
    for cut in (0.0, -3.0, nan):
        with pytest.raises(UserError, match="cut"):
            judge(*args, cut_cm=cut)
    with pytest.raises(UserError, match="IP region"):
        judge(*args, ip_cm=30.0, background_cm=20.0)
    with pytest.raises(UserError, match="unknown loss"):
        judge(t["target"], t["pred"], t["old"], "NoLoss", t["expert"], t["ntracks"])
    with pytest.raises(ValueError, match="shapes"):
        judge(t["target"], t["pred"], t["old"][:5], "MSELoss", t["expert"], t["ntracks"])
    with pytest.raises(ValueError, match="shapes"):
        judge(t["target"], t["pred"], t["old"], "MSELoss", t["expert"][:3], t["ntracks"])


# ---------------------------------------------------------------------------------------------- in every run
@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory):
    """A tiny run of two experts whose filter keeps the even rows, so that "trigger" must use the filtered rows."""
    from neuro_trigger.runner.api import train

    folder = tmp_path_factory.mktemp("trigger_data")
    data = {}
    for i, (split, n) in enumerate({"train": 600, "val": 400, "test": 400}.items()):
        data[split] = [str(folder / f"neuroresults_random{i + 1}.gz")]
        write_table(generate(n, seed=70 + i), data[split][0])
    config = {"extends": "baseline_v2", "data": data, "experts": [0, 3], "epochs": 1, "plot_every": 1000,
              "filter": "dataset_filters.RangeFilter(range(0, 100000, 2))"}
    result = train(config, production=True, log_root=tmp_path_factory.mktemp("trigger_log"), show_progress=False)
    assert result.ok
    return result.folder


def test_every_run_writes_the_trigger_metrics(filtered_run):
    summary = json.loads((filtered_run / "summary.json").read_text())
    for split in ("train", "val", "test"):
        metrics = summary["metrics"][split]
        assert {"all_unfiltered", "all_filtered", "trigger_all", "experts"} <= set(metrics)  # nothing replaced
        total = 0
        for key, expert in (("expert_0", 0), ("expert_3", 3)):
            result = json.loads((filtered_run / key / f"result_{split}.json").read_text())
            assert set(result) == {"unfiltered", "filtered", "trigger"}
            assert metrics["experts"][key] == result
            trigger = result["trigger"]
            # judged on the filtered rows: the same rows and numbers as the "filtered" resolution metrics
            assert trigger["rows"] == result["filtered"]["rows"] < result["unfiltered"]["rows"]
            assert trigger["new"]["z"]["std"] == pytest.approx(result["filtered"]["z_diff_std_cm"])
            assert trigger["old"]["z"]["std"] == pytest.approx(result["filtered"]["old_z_diff_std_cm"])
            assert trigger["vs_old"]["loss"] == pytest.approx(result["filtered"]["loss_vs_old"])
            counts = trigger["new"]["z_vs_expert"]["count"]  # bins of experts -1..4
            assert counts == [trigger["rows"] if e == expert else 0 for e in range(-1, 5)]
            assert 0 <= trigger["new"]["trigger"]["efficiency"] <= 1 and len(trigger["new"]["roc"]["cut_cm"]) == 60
            total += trigger["rows"]
        all_ = metrics["trigger_all"]
        assert all_["rows"] == total == metrics["all_filtered"]["rows"]
        assert all_["new"]["z"]["std"] == pytest.approx(metrics["all_filtered"]["z_diff_std_cm"])
        assert sum(all_["new"]["z_vs_ntracks"]["count"]) == total
