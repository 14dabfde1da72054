#!/usr/bin/env python
"""Bias and resolution in bins of reco z for several runs: the figures and the table of docs/physics.md.

    .venv/bin/python scripts/physics_study.py RUN [RUN ...] [--label NAME ...] [--baseline N]
                                              [--split val] [--out docs/physics] [--reference] [--old]

Each RUN is a run folder (`log/<config>/version_N`). For every expert a run trained, the script reads
`expert_N/result_<split>.json` ("trigger" -> "new": the judge output of neuro_trigger/judge/trigger.py) and
`summary.json` (epochs), and computes what issue 12 asks of a network that is unbiased across z:

- max |bias|: the largest |mean residual| (reco z - predicted z) over the 10 cm reco-z bins from -100 to
  100 cm that hold at least --min-count (100) tracks, and the bin where it is;
- core resolution: the std of the residual of the tracks with |reco z| < 10 cm (the bins [-10, 0) and
  [0, 10) pooled exactly from their counts, means and stds), and its ratio to the baseline run's (the
  --baseline-th RUN, the first by default) for the same expert;
- the overall z resolution (std and half width of the central 68%) and the old network's on the same rows;
- with --reference: the toy's reference fit (`toy.reference.reference_fit`) on the same split, per expert, and
  each network's z std over the fit's.

It writes `bias_vs_z_expert_N.png`, `resolution_vs_z_expert_N.png` (one colour per run, per-bin error
bars: mean_err and std_err; hollow markers for bins under --min-count tracks), `tradeoff_expert_N.png`
(core resolution against max |bias|), `table.md` (the markdown table, also printed) and `table.csv`
(every number, one row per run and expert) into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MIN_COUNT = 100  # a bin counts for the bias goal when it holds at least this many tracks
BIAS_GOAL_CM = 3.0
CORE_CM = 10.0  # the core: |reco z| < 10 cm
CORE_GOAL = 1.05  # core resolution at most 1.05 x the baseline's
REFERENCE_GOAL = 1.05  # z resolution at most 1.05 x the reference fit's
Z_RANGE_CM = (-100.0, 100.0)


# ---------------------------------------------------------------------------------------------
# Reading a run folder
def run_label(folder: Path, summary: dict) -> str:
    """The run's description when it has one, else <config>/<version>."""
    return summary.get("description") or f"{summary.get('config_name', folder.parent.name)}/{folder.name}"


def pooled_std(count: np.ndarray, mean: np.ndarray, std: np.ndarray) -> tuple[float, int]:
    """Std (n - 1 in the denominator) of the union of bins given each bin's count, mean and std (n - 1)."""
    keep = count > 0
    n, m = count[keep].astype(float), mean[keep].astype(float)
    s = np.nan_to_num(std[keep].astype(float))  # a bin of one row has no std; it adds no spread of its own
    total = n.sum()
    if total < 2:
        return math.nan, int(total)
    grand = (n * m).sum() / total
    ss = ((n - 1) * s**2).sum() + (n * (m - grand) ** 2).sum()
    return float(math.sqrt(ss / (total - 1))), int(total)


def _array(values: list) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def bin_table(binned: dict) -> pd.DataFrame:
    """A z_vs_reco_z dict of the judge output as one row per bin."""
    edges = np.asarray(binned["edges"], dtype=float)
    return pd.DataFrame({
        "lo": edges[:-1], "hi": edges[1:], "centre": (edges[:-1] + edges[1:]) / 2,
        "count": np.asarray(binned["count"], dtype=int),
        "mean": _array(binned["mean"]), "mean_err": _array(binned["mean_err"]),
        "std": _array(binned["std"]), "std_err": _array(binned["std_err"]),
    })


def expert_numbers(bins: pd.DataFrame, net: dict, min_count: int = MIN_COUNT) -> dict:
    """What the goals look at, from one network's binned residuals and its overall resolution."""
    inside = (bins["lo"] >= Z_RANGE_CM[0]) & (bins["hi"] <= Z_RANGE_CM[1])
    qualifying = bins[inside & (bins["count"] >= min_count) & bins["mean"].notna()]
    if len(qualifying):
        worst = qualifying.loc[qualifying["mean"].abs().idxmax()]
        max_bias, worst_bin = float(abs(worst["mean"])), f"{worst['lo']:+.0f}..{worst['hi']:+.0f}"
        signed = float(worst["mean"])
    else:
        max_bias, worst_bin, signed = math.nan, "-", math.nan
    core = bins[(bins["lo"] >= -CORE_CM) & (bins["hi"] <= CORE_CM)]
    core_std, core_n = pooled_std(core["count"].to_numpy(), core["mean"].to_numpy(), core["std"].to_numpy())
    z = net.get("z", {})
    return {"max_bias_cm": max_bias, "max_bias_signed_cm": signed, "max_bias_bin": worst_bin,
            "qualifying_bins": int(len(qualifying)),
            "bins_within_goal": int((qualifying["mean"].abs() <= BIAS_GOAL_CM).sum()),
            "core_std_cm": core_std, "core_rows": core_n,
            "z_std_cm": z.get("std", math.nan), "z_hw68_cm": z.get("half_width_68", math.nan),
            "rows": z.get("count", 0)}


def read_run(folder: Path, split: str, label: str | None = None, min_count: int = MIN_COUNT) -> dict:
    """One run: its label, config name, and per expert the numbers, the bins (new and old network)."""
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    experts = {}
    for result in sorted(folder.glob(f"expert_*/result_{split}.json")):
        key = result.parent.name
        trigger = json.loads(result.read_text()).get("trigger")
        if not trigger:
            continue
        new, old = trigger["new"], trigger.get("old") or {}
        bins = bin_table(new["z_vs_reco_z"])
        numbers = expert_numbers(bins, new, min_count)
        state = summary.get("experts", {}).get(key, {})
        best = str(state.get("best_checkpoint") or "")
        numbers.update({
            "epochs": state.get("epochs_done"),
            "best_epoch": int(best.split("=")[1].split(".")[0]) if "=" in best else None,
            "old_z_std_cm": (old.get("z") or {}).get("std", math.nan),
        })
        old_bins = bin_table(old["z_vs_reco_z"]) if old.get("z_vs_reco_z") else None
        experts[key] = {"numbers": numbers, "bins": bins, "old_bins": old_bins}
    return {"folder": folder, "label": label or run_label(folder, summary),
            "config": summary.get("config_name", ""), "experts": experts}


# ---------------------------------------------------------------------------------------------
# The reference fit on the same rows
def reference_bins(folder: Path, split: str) -> dict[str, dict]:
    """Per expert key: the toy reference fit's z std and binned residuals on the run's data of `split`."""
    from neuro_trigger import REPO_ROOT
    from neuro_trigger.data.neuroresults.reader import read_neuroresults
    from neuro_trigger.data.toy.reference import reference_fit
    from neuro_trigger.judge.trigger import Z_BIN_EDGES_CM, binned_resolution

    config = json.loads((Path(folder) / "config.json").read_text())
    paths = config["global"]["data"][split]
    tables = []
    for p in paths:
        path = Path(p) if Path(p).is_absolute() else REPO_ROOT / p
        tables.append(read_neuroresults(path))
    table = {c: np.concatenate([t[c] for t in tables]) for c in tables[0]}
    fit = reference_fit(table)
    reco = np.asarray(table["RecoZ"], dtype=float) * 100.0
    fit_z = fit[:, 0] * 100.0
    expert = np.asarray(table["Expert"])
    out = {}
    for e in np.unique(expert):
        if e < 0:
            continue
        rows = (expert == e) & np.isfinite(fit_z)
        residual = reco[rows] - fit_z[rows]
        binned = binned_resolution(reco[rows], residual, Z_BIN_EDGES_CM)
        binned = {"edges": list(Z_BIN_EDGES_CM), **binned}
        out[f"expert_{e}"] = {"z_std_cm": float(np.std(residual)), "rows": int(rows.sum()),
                              "bins": bin_table(binned)}
    return out


# ---------------------------------------------------------------------------------------------
# Table and figures
def numbers_frame(runs: list[dict], baseline: int = 0, reference: dict | None = None) -> pd.DataFrame:
    """One row per run and expert with every number; ratios against the baseline run and the reference fit."""
    rows = []
    base = runs[baseline]["experts"]
    for i, run in enumerate(runs):
        for key, e in run["experts"].items():
            n = dict(e["numbers"])
            base_core = base.get(key, {}).get("numbers", {}).get("core_std_cm", math.nan)
            n["core_vs_baseline"] = n["core_std_cm"] / base_core if base_core else math.nan
            n["bias_ok"] = bool(n["max_bias_cm"] <= BIAS_GOAL_CM)
            n["core_ok"] = bool(n["core_vs_baseline"] <= CORE_GOAL)
            if reference and key in reference:
                n["ref_z_std_cm"] = reference[key]["z_std_cm"]
                n["z_std_vs_ref"] = n["z_std_cm"] / reference[key]["z_std_cm"]
                n["ref_ok"] = bool(n["z_std_vs_ref"] <= REFERENCE_GOAL)
            n["z_std_vs_old"] = n["z_std_cm"] / n["old_z_std_cm"] if n["old_z_std_cm"] else math.nan
            rows.append({"run": i, "label": run["label"], "config": run["config"], "expert": key,
                         "folder": str(run["folder"]), **n})
    return pd.DataFrame(rows)


def _fmt(x, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    """The table of docs/physics.md: one line per run and expert."""
    has_ref = "z_std_vs_ref" in frame
    head = ["config", "expert", f"max \\|bias\\| (cm) [bin], bins <= {BIAS_GOAL_CM:g} cm",
            "core res. \\|z\\| < 10 cm (cm)", "core vs baseline", "z std / hw68 (cm)", "old net z std (cm)"]
    head += ["z std vs ref. fit"] if has_ref else []
    head += ["epochs (best)", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in frame.iterrows():
        goal = "bias " + ("ok" if r["bias_ok"] else "miss") + ", core " + ("ok" if r["core_ok"] else "miss")
        bias = f"{_fmt(r['max_bias_signed_cm'])} [{r['max_bias_bin']}]"
        cells = [r["label"], r["expert"].replace("expert_", ""),
                 f"{bias}, {r['bins_within_goal']}/{r['qualifying_bins']}",
                 _fmt(r["core_std_cm"]), _fmt(r["core_vs_baseline"], 2),
                 f"{_fmt(r['z_std_cm'])} / {_fmt(r['z_hw68_cm'])}", _fmt(r["old_z_std_cm"])]
        if has_ref:
            cells.append(f"{_fmt(r['z_std_vs_ref'], 2)} (fit {_fmt(r['ref_z_std_cm'])})")
        epochs = "-" if r["epochs"] is None or pd.isna(r["epochs"]) else f"{int(r['epochs'])}"
        best = "" if r["best_epoch"] is None or pd.isna(r["best_epoch"]) else f" ({int(r['best_epoch'])})"
        cells += [epochs + best, goal]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _errorbars(ax, bins: pd.DataFrame, value: str, error: str, offset: float, color, label: str,
               min_count: int, ls: str = "-") -> None:
    shown = bins[bins["count"] >= 2]
    good = shown["count"] >= min_count
    x = shown["centre"] + offset
    ax.plot(x, shown[value], color=color, lw=1.0, ls=ls, alpha=0.8)
    ax.errorbar(x[good], shown[value][good], yerr=shown[error][good], fmt="o", ms=3.5, color=color,
                capsize=2, lw=1, label=label)
    if (~good).any():
        ax.errorbar(x[~good], shown[value][~good], yerr=shown[error][~good], fmt="o", ms=3.5, mfc="none",
                    color=color, capsize=2, lw=0.7)


def _save(plt, fig, ax, path: Path) -> Path:
    """Grid, the legend beside the axes, and the figure to `path`, closed."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def figures(runs: list[dict], out: Path, reference: dict | None = None, old: bool = False,
            min_count: int = MIN_COUNT, frame: pd.DataFrame | None = None) -> list[Path]:
    """bias_vs_z, resolution_vs_z and tradeoff figures per expert; returns the paths written."""
    plt = _plt()
    colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20")
    keys = sorted({k for r in runs for k in r["experts"]}, key=lambda k: int(k.split("_")[1]))
    written = []
    for key in keys:
        present = [(i, r) for i, r in enumerate(runs) if key in r["experts"]]
        step = 1.6 / max(1, len(present))
        for kind, value, error, ylabel in (("bias", "mean", "mean_err", "mean residual reco z - pred z (cm)"),
                                           ("resolution", "std", "std_err", "std of the residual (cm)")):
            fig, ax = plt.subplots(figsize=(11, 4.8))
            for j, (i, run) in enumerate(present):
                offset = (j - (len(present) - 1) / 2) * step
                _errorbars(ax, run["experts"][key]["bins"], value, error, offset, colors(i % colors.N),
                           run["label"], min_count)
            if old and present and present[0][1]["experts"][key]["old_bins"] is not None:
                _errorbars(ax, present[0][1]["experts"][key]["old_bins"], value, error, 0.0, "0.45",
                           "old network", min_count, ls="--")
            if reference and key in reference:
                _errorbars(ax, reference[key]["bins"], value, error, 0.0, "0.7", "reference fit", min_count, ls=":")
            if kind == "bias":
                ax.axhspan(-BIAS_GOAL_CM, BIAS_GOAL_CM, color="tab:green", alpha=0.12, lw=0,
                           label=f"goal: |bias| <= {BIAS_GOAL_CM:g} cm")
                ax.axhline(0, color="k", lw=0.6)
            else:
                ax.axvspan(-CORE_CM, CORE_CM, color="tab:green", alpha=0.08, lw=0, label="core |z| < 10 cm")
                ax.set_ylim(bottom=0)
            ax.set_xlim(*Z_RANGE_CM)
            ax.set_xlabel("reco z (cm), 10 cm bins")
            ax.set_ylabel(ylabel)
            name = key.replace("_", " ")
            ax.set_title(f"{name}: {kind} vs reco z (hollow: bins under {min_count} tracks)", fontsize=10)
            written.append(_save(plt, fig, ax, out / f"{kind}_vs_z_{key}.png"))
        if frame is not None:
            sub = frame[frame["expert"] == key]
            fig, ax = plt.subplots(figsize=(9, 4.8))
            for _, r in sub.iterrows():
                ax.plot(r["core_std_cm"], r["max_bias_cm"], "o", color=colors(int(r["run"]) % colors.N),
                        mec="k", mew=0.4, ms=7, label=f"{int(r['run'])}: {r['label']}")
                ax.annotate(str(int(r["run"])), (r["core_std_cm"], r["max_bias_cm"]), xytext=(4, 3),
                            textcoords="offset points", fontsize=7)
            base = sub[sub["run"] == sub["run"].min()]
            if len(base):
                ax.axvline(float(base["core_std_cm"].iloc[0]) * CORE_GOAL, color="tab:green", ls="--", lw=0.8,
                           label=f"core goal: {CORE_GOAL:g} x first run")
            ax.axhline(BIAS_GOAL_CM, color="tab:green", ls=":", lw=0.8, label=f"bias goal {BIAS_GOAL_CM:g} cm")
            ax.set_xlabel("core resolution, |reco z| < 10 cm (cm)")
            ax.set_ylabel(f"max |bias| over bins with >= {min_count} tracks (cm)")
            ax.set_title(f"{key.replace('_', ' ')}: the trade-off", fontsize=10)
            ax.set_ylim(bottom=0)
            written.append(_save(plt, fig, ax, out / f"tradeoff_{key}.png"))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders")
    parser.add_argument("--label", nargs="*", default=None, help="a name per run (default: its description)")
    parser.add_argument("--baseline", type=int, default=0, help="index of the run the core resolution is compared with")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", type=Path, default=Path("docs/physics"))
    parser.add_argument("--min-count", type=int, default=MIN_COUNT)
    parser.add_argument("--reference", action="store_true", help="add the toy's reference fit on the same split")
    parser.add_argument("--old", action="store_true", help="draw the old network (from the first run)")
    args = parser.parse_args(argv)
    if args.label and len(args.label) != len(args.runs):
        parser.error(f"--label needs one name per run ({len(args.runs)}), got {len(args.label)}")
    if not 0 <= args.baseline < len(args.runs):
        parser.error(f"--baseline must be an index into the runs (0..{len(args.runs) - 1})")
    runs = []
    for i, folder in enumerate(args.runs):
        if not (folder / "summary.json").is_file():
            parser.error(f"{folder}: not a run folder (no summary.json)")
        run = read_run(folder, args.split, args.label[i] if args.label else None, args.min_count)
        if not run["experts"]:
            parser.error(f"{folder}: no expert_N/result_{args.split}.json with trigger metrics")
        runs.append(run)
    reference = reference_bins(args.runs[0], args.split) if args.reference else None
    frame = numbers_frame(runs, args.baseline, reference)
    args.out.mkdir(parents=True, exist_ok=True)
    written = figures(runs, args.out, reference, args.old, args.min_count, frame)
    table = markdown_table(frame)
    (args.out / "table.md").write_text(table)
    frame.to_csv(args.out / "table.csv", index=False)
    print(table)
    print(f"wrote {len(written)} figures, table.md and table.csv to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
