"""Tests of the toy Monte Carlo: format, determinism, physics consistency, statistics, files, CLI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.data.neuroresults.format import COLUMNS, INT_COLUMNS
from neuro_trigger.data.toy import cli, default_set, real_sample
from neuro_trigger.data.toy.criteria import criteria
from neuro_trigger.data.toy.generator import TOY_VERSION, generate
from neuro_trigger.data.toy.reference import reference_fit
from neuro_trigger.data.toy.stats import input_stats, layer_residuals, stereo_slopes, summarize
from neuro_trigger_tests.run_helpers import load_script

REAL_SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "neuroresults_sample.tsv"
MISSING_SL_OF_EXPERT = {1: 7, 2: 5, 3: 3, 4: 1}


def _read(path: Path) -> pd.DataFrame:
    """Read a neuroresults file with plain pandas (the project's reader is tested elsewhere)."""
    return pd.read_csv(path, sep="\t", skip_blank_lines=True)


def _present(table: pd.DataFrame, sl: int) -> np.ndarray:
    cols = [f"SL{sl}-{name}" for name in ("relID", "driftT", "alpha")]
    return (table[cols].to_numpy() != 0).any(axis=1)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return generate(20_000, seed=11)


@pytest.fixture(scope="module")
def stats(table: pd.DataFrame) -> dict:
    return summarize(table, reference=True)


def test_deterministic_for_a_seed_and_different_for_another() -> None:
    a = generate(2000, seed=1)
    pd.testing.assert_frame_equal(a, generate(2000, seed=1))
    b = generate(2000, seed=2)
    assert not np.allclose(a["SL1-relID"].to_numpy(), b["SL1-relID"].to_numpy())


def test_shape_columns_and_types(table: pd.DataFrame) -> None:
    assert table.shape == (20_000, 42)
    assert list(table.columns) == COLUMNS
    for col in COLUMNS:
        assert table[col].dtype == (np.int64 if col in INT_COLUMNS else np.float64), col
    assert (table["iNodes"] == 27).all() and (table["oNodes"] == 2).all()
    assert np.isfinite(table.select_dtypes("float").to_numpy()).all()
    assert generate(1, seed=0).shape == (1, 42)
    empty = generate(0, seed=0)
    assert empty.shape == (0, 42) and list(empty.columns) == COLUMNS


def test_expert_follows_the_missing_stereo_superlayer(table: pd.DataFrame) -> None:
    expert = table["Expert"].to_numpy()
    assert set(np.unique(expert)) == {0, 1, 2, 3, 4}
    rows0 = expert == 0
    for sl in (1, 3, 5, 7):
        assert _present(table, sl)[rows0].all()
    for e, sl in MISSING_SL_OF_EXPERT.items():
        present = _present(table, sl)
        assert not present[expert == e].any(), f"expert {e}: SL{sl} must be empty in all rows"
        assert present[expert != e].mean() > 0.97, f"SL{sl} empty in too many rows of other experts"
    # Axial superlayers are missing in a few to many rows, as in real data.
    for sl in (0, 2, 4, 6, 8):
        assert 0.03 < 1.0 - _present(table, sl).mean() < 0.5


def test_drift_time_quantised_signed_and_in_range(table: pd.DataFrame) -> None:
    drift = table[[f"SL{sl}-driftT" for sl in range(9)]].to_numpy()
    assert np.abs(drift).max() <= 1.0
    np.testing.assert_array_equal(drift * 256.0, np.rint(drift * 256.0))
    assert (drift > 0).mean() > 0.2 and (drift < 0).mean() > 0.2


def test_targets_and_old_network_output(table: pd.DataFrame) -> None:
    for col in ("RecoZ", "RecoTheta", "ScaleZ", "ScaleTheta"):
        assert table[col].between(-1.0, 1.0).all(), col
    np.testing.assert_array_equal(table["RawZ"], np.rint(table["ScaleZ"] * 4096))
    np.testing.assert_array_equal(table["RawTheta"], np.rint(table["ScaleTheta"] * 4096))


def test_input_ranges_resemble_real_data(stats: dict) -> None:
    assert 0.05 < stats["alpha_max"][0] < 0.09
    assert 0.35 < stats["alpha_max"][8] < 0.5
    assert all(stats["alpha_max"][sl] < stats["alpha_max"][sl + 1] for sl in range(8))
    # relID is clipped to [-1, 1]; since version 3 the stereo tails reach the clip (about 2% of SL1 rows,
    # docs/toy_mc.md), so the 0.1%/99.9% quantiles may sit at -1 or 1.
    for lo, hi in stats["relid_span"].values():
        assert -1.0 <= lo < 0.0 < hi <= 1.0


def test_expert_shares_and_distributions(stats: dict) -> None:
    share = stats["expert_share"]
    assert 0.55 < share[0] < 0.8
    assert 0.05 < share[1] < 0.15
    assert 0.015 < share[2] < 0.08
    assert 0.07 < share[3] < 0.2
    assert 0.03 < share[4] < 0.12
    z = np.asarray(stats["z_hist"]) / stats["rows"]
    assert 0.35 < z[5] < 0.55  # |z| < 2 cm
    assert 0.25 < z[-2:].sum() < 0.45  # z > 20 cm
    theta = np.asarray(stats["theta_hist"]) / stats["rows"]
    assert theta[0] < 0.02 and theta[-1] < 0.01 and theta[4] > 0.15


def test_event_structure(table: pd.DataFrame, stats: dict) -> None:
    assert 0.45 < stats["duplicate_fraction"] < 0.65
    per_event = stats["reco_per_event"]
    assert per_event[1] > per_event[2] > per_event.get(3, 0)
    assert 4.5 < stats["ntracks"]["mean"] < 7.5
    assert stats["rows_per_event"]["max"] <= 15
    key = ["Experiment", "Run", "Subrun", "Event"]
    # Each event's rows are contiguous, with increasing Track below nTracks.
    first = np.r_[True, (table[key].to_numpy()[1:] != table[key].to_numpy()[:-1]).any(axis=1)]
    assert first.sum() == stats["events"]
    track, ntracks = table["Track"].to_numpy(), table["nTracks"].to_numpy()
    assert ((track[1:] > track[:-1]) | first[1:]).all()
    assert (track < ntracks).all() and (ntracks <= 20).all()
    assert (table["Subrun"] == 0).all()


def test_duplicates_share_the_reco_track_with_slightly_different_inputs(table: pd.DataFrame) -> None:
    key = ["Run", "Event", "RecoZ", "RecoTheta"]
    dup = table.duplicated(key, keep=False)
    groups = table[dup].groupby(key)
    varied = groups["SL3-relID"].nunique().gt(1) | groups["SL3-driftT"].nunique().gt(1)
    assert 0.1 < varied.mean() < 0.9


def test_reference_fit_follows_the_truth(table: pd.DataFrame, stats: dict) -> None:
    # Since version 3 the stereo inputs carry as little z as the real ones, and the geometric fit no longer
    # beats the old network (docs/toy_mc.md); it must still follow z and theta with the right sign.
    fit = reference_fit(table)
    assert fit.shape == (len(table), 2) and np.isfinite(fit).all()
    expert = table["Expert"].to_numpy()
    for e in range(5):
        sel = expert == e
        assert np.corrcoef(fit[sel, 0], table["RecoZ"].to_numpy()[sel])[0, 1] > 0.4, e
        assert np.corrcoef(fit[sel, 1], table["RecoTheta"].to_numpy()[sel])[0, 1] > 0.5, e
        assert stats["ref_z_median_abs"][e] < 30.0, e
    # Works on the reader's output too: a dict of float32 arrays.
    as_dict = {c: table[c].to_numpy(np.float32 if c not in INT_COLUMNS else np.int64) for c in COLUMNS}
    np.testing.assert_allclose(reference_fit(as_dict), fit, atol=1e-3)


def test_file_round_trip(tmp_path: Path) -> None:
    table = generate(3000, seed=4)
    path = default_set.write_atomic(table, tmp_path / "neuroresults_random1.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["neuroresults_random1.gz"]  # no temp file left
    back = _read(path)
    assert list(back.columns) == COLUMNS and len(back) == 3000
    np.testing.assert_array_equal(back[INT_COLUMNS].to_numpy(), table[INT_COLUMNS].to_numpy())
    floats = [c for c in COLUMNS if c not in INT_COLUMNS]
    np.testing.assert_allclose(back[floats].to_numpy(), table[floats].to_numpy(), rtol=1e-6, atol=1e-7)
    # Raw == round(Scale * 4096) survives the text format and float32 parsing.
    for scale, raw in (("ScaleZ", "RawZ"), ("ScaleTheta", "RawTheta")):
        parsed = back[scale].to_numpy(np.float32)
        np.testing.assert_array_equal(np.rint(parsed * np.float32(4096)), back[raw])


def test_cli_writes_files_and_compares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["--out", str(tmp_path), "--tracks", "500", "--seed", "3", "--splits", "train,test"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train: ") and lines[1].startswith("test: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "neuroresults_random1.gz",
        "neuroresults_random3.gz",
    ]
    train, test = _read(tmp_path / "neuroresults_random1.gz"), _read(tmp_path / "neuroresults_random3.gz")
    assert len(train) == len(test) == 500 and not np.allclose(train["RecoZ"], test["RecoZ"])
    assert cli.main(["--compare", "--tracks", "2000"]) == 0
    out = capsys.readouterr().out
    assert "expert 0 share" in out and "reference fit" in out
    with pytest.raises(SystemExit) as exc:
        cli.main(["--out", str(tmp_path), "--splits", "train,bogus"])
    assert exc.value.code == 2


def test_ensure_default_dataset_generates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_set, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(default_set, "DEFAULT_DIR", tmp_path / "data_cache" / "toy")
    monkeypatch.setattr(default_set, "DEFAULT_TRACKS", {"train": 400, "val": 100, "test": 100})
    paths = default_set.ensure_default_dataset()
    assert set(paths) == {"train", "val", "test"}
    for split, path in paths.items():
        assert path == tmp_path / default_set.DEFAULT_FILES[split] and path.is_file()
    assert len(_read(paths["val"])) == 100
    stamp = {p: p.stat().st_mtime_ns for p in paths.values()}
    os.utime(paths["train"], ns=(1, 1))
    assert default_set.ensure_default_dataset() == paths
    assert paths["train"].stat().st_mtime_ns == 1  # reused, not rewritten
    (default_set.DEFAULT_DIR / "VERSION").write_text("stale\n")
    default_set.ensure_default_dataset()
    assert paths["train"].stat().st_mtime_ns != 1 and all(p.is_file() for p in stamp)
    assert default_set.DEFAULT_FILES["train"] == "data_cache/toy/neuroresults_random1.gz"


@pytest.mark.skipif(
    not REAL_SAMPLE.is_file(), reason=f"real sample {REAL_SAMPLE} not available outside this workplace"
)
def test_toy_matches_the_real_file_layout() -> None:
    real = _read(REAL_SAMPLE)
    toy = generate(200, seed=0)
    assert list(real.columns) == list(toy.columns)
    assert [real[c].dtype.kind for c in COLUMNS] == [toy[c].dtype.kind for c in COLUMNS]
    stats = summarize(real)  # the statistics also run on real data
    assert stats["rows"] == len(real) and abs(sum(stats["expert_share"].values()) - 1.0) < 1e-9


# ---------------------------------------------------------------------------------------------
# Version 3 (issue 12): shapes from the physics, compared with the real sample's statistics.
REAL_STATS_FILE = real_sample.REAL_INPUT_STATS_FILE
needs_real_stats = pytest.mark.skipif(
    not REAL_STATS_FILE.is_file(), reason=f"real statistics {REAL_STATS_FILE} not available outside this workplace"
)


@pytest.fixture(scope="module")
def large() -> pd.DataFrame:
    return generate(40_000, seed=5)


def test_version() -> None:
    assert TOY_VERSION == "3"


def test_stereo_relids_carry_z_with_the_real_signs(large: pd.DataFrame) -> None:
    toy = stereo_slopes(large)
    for sl, (real_slope, real_r) in real_sample.REAL_STATS["stereo_slope"].items():
        slope, r = toy[sl]
        assert np.sign(slope) == np.sign(real_slope), (sl, slope)
        assert abs(r - real_r) < 0.1, (sl, r)
        if abs(real_slope) > 0.1:  # SL7's +0.06 is within the statistical error of 40,000 rows
            assert abs(slope - real_slope) < 0.3 * abs(real_slope), (sl, slope)
    # U layers (SL1, SL5) fall with z, V layers (SL3, SL7) rise; the slope shrinks with the radius.
    assert toy[1][0] < toy[5][0] < 0 < toy[7][0] < toy[3][0]
    z = large["RecoZ"].to_numpy()
    for sl in (0, 2, 4, 6, 8):  # the axial relIDs carry no z
        r = large[f"SL{sl}-relID"].to_numpy()
        assert abs(np.corrcoef(z[r != 0], r[r != 0])[0, 1]) < 0.05, sl


def test_alpha_shows_the_charge_asymmetry(large: pd.DataFrame) -> None:
    for sl in range(9):
        a = large[f"SL{sl}-alpha"].to_numpy()
        nz = a[a != 0]
        assert 0.66 < np.mean(nz > 0) < 0.75, sl  # real: 69.5-70.9% of the non-zero alphas
        assert nz[nz > 0].mean() > -nz[nz < 0].mean(), sl  # positive (background) tracks are softer
    for sl in range(1, 8):  # real: 61-67% of all rows
        assert 0.58 < np.mean(large[f"SL{sl}-alpha"].to_numpy() > 0) < 0.70, sl


def test_reco_z_has_the_background_peak_at_50_to_60_cm(large: pd.DataFrame) -> None:
    z = large["RecoZ"].to_numpy() * 100.0
    share = np.histogram(z, np.arange(-100.0, 101.0, 10.0))[0] / len(z)
    assert 0.13 < share[15] < 0.17  # [50, 60): real 15.3%
    assert share[15] > 2.5 * share[16] and share[15] > 3 * share[14]  # a narrow peak
    assert np.mean(z >= 70.0) < 0.04  # real 2.4% (version 2: 12%)
    assert 0.23 < share[9] < 0.27 and 0.29 < share[10] < 0.33  # [-10, 0), [0, 10): real 25.0%, 31.0%
    theta = large["RecoTheta"].to_numpy() * 80.0 + 90.0
    assert np.median(theta[z > 50.0]) > 100.0  # background from large z flies backwards


def test_drift_time_per_layer_type(large: pd.DataFrame) -> None:
    for sl in range(9):
        d = large[f"SL{sl}-driftT"].to_numpy()
        nz = d[d != 0]
        assert np.mean(nz > 0) < 0.5, sl  # left/right ambiguity reported as left
        if sl in (1, 3, 5, 7):
            assert np.mean(nz == -1.0) > 0.05, sl  # late hits saturate (real: 5% quantile at -1)
        else:
            assert 0.35 < nz.std() < 0.48, sl  # real 0.39-0.44 (version 2: 0.58)
    sl0 = large["SL0-driftT"].to_numpy()
    assert np.mean(sl0[sl0 != 0] > 0) < 0.36  # real: 30%


def test_ntracks_is_compared_per_row(large: pd.DataFrame) -> None:
    stats = summarize(large)
    assert abs(stats["ntracks"]["mean"] - large["nTracks"].mean()) < 1e-9  # per row, as the real 5.9
    assert 5.5 < stats["ntracks"]["mean"] < 6.3 and stats["ntracks"]["median"] == 5


@needs_real_stats
def test_criteria_on_a_small_sample(large: pd.DataFrame) -> None:
    crit = criteria(large)
    assert list(crit.columns) == ["group", "criterion", "real", "toy", "limit", "ok"]
    counts = crit.groupby("group").size().to_dict()
    assert counts == {"relID vs z": 13, "input": 135, "reco z": 20, "reco theta": 16, "tuned": 37}
    # 40,000 rows: everything but SL6's positive fraction (a known miss) and statistical edge cases passes.
    assert crit.ok.mean() > 0.95
    inputs = crit[crit.group == "input"]
    assert inputs.ok.sum() >= 130
    assert not crit.set_index("criterion").loc["SL6-relID frac_positive", "ok"]


def test_statistics_work_on_a_dict_of_arrays(large: pd.DataFrame) -> None:
    as_dict = {c: large[c].to_numpy() for c in COLUMNS}
    pd.testing.assert_frame_equal(input_stats(as_dict), input_stats(large))
    assert stereo_slopes(as_dict) == stereo_slopes(large)
    res = layer_residuals(large)
    assert list(res.index) == ["SL1", "SL3", "SL5", "SL7"]
    assert (res["mean"].abs() < 2.0).all() and (res["r"] > 0.6).all()  # scaling and geometry consistent


def _script():
    return load_script("toy_vs_real")


@needs_real_stats
def test_toy_vs_real_script_writes_figures_and_the_doc_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# title\n\nbefore\n<!-- toy_vs_real:begin -->\nold\n<!-- toy_vs_real:end -->\nafter\n")
    figures = tmp_path / "figs"
    args = ["--tracks", "4000", "--seed", "3", "--figures", str(figures), "--doc", str(doc)]
    if real_sample.REAL_SAMPLE_FILE.is_file():
        args += ["--transfer", "--transfer-tracks", "2000"]
    assert _script().main(args) == 0
    out = capsys.readouterr().out
    assert "criteria pass" in out and "SL1-relID slope vs z" in out
    names = sorted(p.name for p in figures.iterdir())
    assert len(names) == 29 and "SL6-relID.png" in names and "reco_z_theta.png" in names
    text = doc.read_text()
    assert text.startswith("# title\n\nbefore\n<!-- toy_vs_real:begin -->\n")
    assert text.endswith("<!-- toy_vs_real:end -->\nafter\n")
    assert "old\n" not in text and "(figs/SL0-relID.png)" in text and "| relID vs z |" in text
    if real_sample.REAL_SAMPLE_FILE.is_file():
        assert "Per-layer check on the 51 real rows" in text and "trained on the toy only" in text
    # --strict fails on a miss (SL6's positive fraction misses, docs/toy_mc.md); a doc without the markers
    # is refused before anything is generated.
    assert _script().main(args[:6] + ["--no-doc", "--strict"]) == 1
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(SystemExit):
        _script().main(args[:4] + ["--figures", str(figures), "--doc", str(tmp_path / "bare.md")])
