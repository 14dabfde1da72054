#!/usr/bin/env python
"""The toy Monte Carlo against the real sample: every criterion of issue 12, the figures and the docs' tables.

    .venv/bin/python scripts/toy_vs_real.py [--tracks 200000] [--seed 1] [--transfer]

Generates toy tracks (seed 1 gives the default data set's train split), compares them with the real
sample's statistics (the per-input statistics file, read with pandas, and the numbers of
belle2_neuroresults.md in real_sample.REAL_STATS) and prints one line per criterion with pass or miss. It
writes one figure per input (toy quantiles against the real ones) plus the z, theta and relID-vs-z
figures under --figures, and rewrites the section of --doc between the markers
`<!-- toy_vs_real:begin -->` and `<!-- toy_vs_real:end -->` with the tables. Where the 51 real rows of
../shared/data/neuroresults_sample.tsv exist it adds the per-layer residual check, and with --transfer it
trains a small network on the toy and applies it to those real rows. Exit status 0 (misses are reported,
not failures) unless --strict.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuro_trigger import REPO_ROOT  # noqa: E402
from neuro_trigger.data.neuroresults.format import INPUT_COLUMNS  # noqa: E402
from neuro_trigger.data.toy import criteria, generator, real_sample  # noqa: E402
from neuro_trigger.data.toy import stats as toy_stats  # noqa: E402

BEGIN, END = "<!-- toy_vs_real:begin -->", "<!-- toy_vs_real:end -->"
CHECK = {True: "pass", False: "**miss**"}


# ---------------------------------------------------------------------------------------------
# Figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def input_figure(plt, col: str, x: np.ndarray, real: pd.Series, toy: pd.Series, rows: pd.DataFrame, path: Path):
    """Toy quantile function with the toy's and the real 5/50/95% quantiles; the criteria beside it."""
    q = np.linspace(0.005, 0.995, 199)
    fig, (ax, tx) = plt.subplots(1, 2, figsize=(7.2, 2.5), gridspec_kw={"width_ratios": [1.5, 1]})
    ax.plot(q, np.quantile(x, q), color="tab:blue", lw=1.2, label="toy quantiles")
    levels = [0.05, 0.5, 0.95]
    ax.plot(levels, [toy["p05"], toy["p50"], toy["p95"]], "x", color="tab:blue", ms=7, label="toy 5/50/95%")
    ax.plot(levels, [real["p05"], real["p50"], real["p95"]], "o", mfc="none", color="tab:red", ms=7,
            label="real 5/50/95%")
    ax.axhline(real["mean"], color="tab:red", lw=0.8, ls="--", label="real mean")
    ax.axhline(toy["mean"], color="tab:blue", lw=0.8, ls=":", label="toy mean")
    ax.set_xlabel("quantile level")
    ax.set_title(col, fontsize=10)
    ax.legend(fontsize=6, loc="upper left")
    ax.tick_params(labelsize=7)
    tx.axis("off")
    lines = ["criterion     real     toy"]
    for _, r in rows.iterrows():
        name = r["criterion"].split(" ", 1)[1]
        lines.append(f"{name:13s} {r['real']:+.3f}  {r['toy']:+.3f} {'ok' if r['ok'] else 'MISS'}")
    tx.text(0.0, 0.95, "\n".join(lines), family="monospace", fontsize=7, va="top")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def summary_figures(plt, table: pd.DataFrame, stats: dict, out: Path) -> list[str]:
    """reco z and theta shares (10 cm / 10 degree bins), and the mean stereo relID in bins of reco z."""
    names = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
    for ax, name, edges, unit in ((axes[0], "z", real_sample.Z10_EDGES, "cm"),
                                  (axes[1], "theta", real_sample.THETA10_EDGES, "deg")):
        real = criteria._pct(real_sample.REAL_STATS[f"{name}10_hist"])
        toy = criteria._pct(stats[f"{name}10_hist"])
        centres = 0.5 * (edges[1:] + edges[:-1])
        width = edges[1] - edges[0]
        ax.bar(centres - width / 5, real, width=0.4 * width, color="tab:red", label="real")
        ax.bar(centres + width / 5, toy, width=0.4 * width, color="tab:blue", label="toy")
        ax.set_xlabel(f"reco {name} ({unit})")
        ax.set_ylabel("% of rows")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "reco_z_theta.png", dpi=72)
    plt.close(fig)
    names.append("reco_z_theta.png")

    fig, axes = plt.subplots(1, 4, figsize=(11, 2.6), sharey=True)
    z = table["RecoZ"].to_numpy() * 100.0
    edges = np.arange(-100.0, 101.0, 20.0)
    centres = 0.5 * (edges[1:] + edges[:-1])
    for ax, sl in zip(axes, toy_stats.STEREO, strict=True):
        r = table[f"SL{sl}-relID"].to_numpy()
        sel = r != 0
        k = np.digitize(z[sel], edges) - 1
        counts = np.bincount(k, minlength=len(centres))[: len(centres)]
        means = np.bincount(k, r[sel], minlength=len(centres))[: len(centres)] / np.maximum(counts, 1)
        ok = counts >= 50
        ax.plot(centres[ok], means[ok], "o-", color="tab:blue", ms=3, label="toy: mean relID")
        zz = np.linspace(-100, 100, 3)
        for who, (slope, _), colour in (("real", real_sample.REAL_STATS["stereo_slope"][sl], "tab:red"),
                                        ("toy", stats["stereo_slope"][sl], "tab:blue")):
            ax.plot(zz, np.mean(r[sel]) + slope * (zz - z[sel].mean()) / 100.0, "--", color=colour,
                    label=f"{who} slope {slope:+.2f}/m")
        ax.set_title(f"SL{sl}-relID", fontsize=9)
        ax.set_xlabel("reco z (cm)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "stereo_relid_vs_z.png", dpi=72)
    plt.close(fig)
    names.append("stereo_relid_vs_z.png")
    return names


# ---------------------------------------------------------------------------------------------
# Transfer check: a network trained on the toy only, applied to the real rows
def transfer_check(real_rows: pd.DataFrame, tracks: int, seed: int) -> dict:
    """Train 27 -> 81 -> 2 (tanh, as on the FPGA) on toy rows, all experts together; evaluate on the real rows."""
    import torch

    torch.manual_seed(seed)
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train = generator.generate(tracks, seed + 100)
        val = generator.generate(max(tracks // 4, 1000), seed + 101)

        def xy(t: pd.DataFrame) -> tuple:
            return (torch.tensor(t[INPUT_COLUMNS].to_numpy(np.float32)),
                    torch.tensor(t[["RecoZ", "RecoTheta"]].to_numpy(np.float32)))

        x, y = xy(train)
        net = torch.nn.Sequential(torch.nn.Linear(27, 81), torch.nn.Tanh(), torch.nn.Linear(81, 2), torch.nn.Tanh())
        opt = torch.optim.Adam(net.parameters(), 2e-3)
        for _ in range(12):
            perm = torch.randperm(len(x))
            for i in range(0, len(x), 512):
                b = perm[i: i + 512]
                opt.zero_grad()
                loss = ((net(x[b]) - y[b]) ** 2).mean()
                loss.backward()
                opt.step()
        out = {}
        with torch.no_grad():
            for name, t in (("toy validation", val), ("real rows", real_rows)):
                z = t["RecoZ"].to_numpy() * 100.0
                pred = net(xy(t)[0]).numpy()[:, 0] * 100.0
                old = t["ScaleZ"].to_numpy() * 100.0
                out[name] = {
                    "rows": len(t),
                    "net_r": float(np.corrcoef(z, pred)[0, 1]),
                    "net_std": float(np.std(z - pred)),
                    "net_med": float(np.median(np.abs(z - pred))),
                    "old_r": float(np.corrcoef(z, old)[0, 1]),
                    "old_std": float(np.std(z - old)),
                    "old_med": float(np.median(np.abs(z - old))),
                }
        return out
    finally:
        torch.set_num_threads(n_threads)


# ---------------------------------------------------------------------------------------------
# Markdown
def _md_table(head: list[str], rows: list[list[str]]) -> str:
    """A markdown table; "|" inside a cell is escaped (links and images are left alone)."""

    def cell(text: str) -> str:
        return text if text.startswith(("[", "!")) else text.replace("\\|", "|").replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows])


def markdown(crit: pd.DataFrame, args, stats: dict, fig_rel: str, figures: list[str], residuals: dict,
             transfer: dict | None) -> str:
    parts = [
        f"Generated by `scripts/toy_vs_real.py --tracks {args.tracks} --seed {args.seed}"
        f"{' --transfer' if transfer else ''}` (TOY_VERSION "
        f"{generator.TOY_VERSION}) from `{args.stats_label}`; do not edit by hand.",
        "",
        "#### Summary",
        "",
    ]
    rows = []
    for g in criteria.CRITERIA_GROUPS:
        sub = crit[crit.group == g]
        misses = ", ".join(sub.loc[~sub.ok, "criterion"]) or "-"
        rows.append([g, f"{int(sub.ok.sum())} / {len(sub)}", misses])
    parts += [_md_table(["group", "pass", "misses"], rows), ""]

    parts += ["#### Stereo relID against reco z (rows where relID != 0), and axial relID", ""]
    sub = crit[crit.group == "relID vs z"]
    parts += [_md_table(["criterion", "real", "toy", "limit", ""],
                        [[r.criterion, "below 0.05" if "axial" in r.criterion else f"{r.real:+.3f}",
                          f"{r.toy:+.3f}", r.limit, CHECK[r.ok]] for r in sub.itertuples()]), ""]
    parts += [f"![stereo relID against z]({fig_rel}/stereo_relid_vs_z.png)", ""]

    parts += ["#### The 27 inputs", "",
              "Each cell: real / toy; limits: mean within 0.1 real std, std and non-zero std within 10%, zero "
              "and positive fraction within 0.03. The figure per input shows the toy's quantile function "
              "with the real and toy 5/50/95% quantiles.", ""]
    rows = []
    sub = crit[crit.group == "input"].set_index("criterion")
    for col in INPUT_COLUMNS:
        cells = [f"[{col}]({fig_rel}/{col}.png)"]
        for key in ("mean", "std", "nonzero_std", "frac_zero", "frac_positive"):
            r = sub.loc[f"{col} {key}"]
            cells.append(f"{r.real:.3f} / {r.toy:.3f}" + ("" if r.ok else " **miss**"))
        rows.append(cells)
    parts += [_md_table(["input", "mean", "std", "non-zero std", "zero fraction", "positive fraction"], rows), ""]

    parts += ["#### Reco z (10 cm bins) and reco theta (10 degree bins), % of rows (limit ±2 points)", ""]
    for g in ("reco z", "reco theta"):
        sub = crit[crit.group == g]
        parts += [_md_table(["bin", "real", "toy", ""],
                            [[r.criterion.split(" in ")[1].rsplit(",", 1)[0], f"{r.real:.1f}", f"{r.toy:.1f}",
                              CHECK[r.ok]] for r in sub.itertuples()]), ""]
    parts += [f"![reco z and theta]({fig_rel}/reco_z_theta.png)", ""]

    parts += ["#### Tuned quantities", ""]
    sub = crit[crit.group == "tuned"]
    parts += [_md_table(["quantity", "real", "toy", "limit", ""],
                        [[r.criterion, f"{r.real:.3g}", f"{r.toy:.3g}", r.limit, CHECK[r.ok]]
                         for r in sub.itertuples()]), ""]
    parts += ["All statistics in the structure of `toy.stats.summarize` (`format_comparison`):", "",
              toy_stats.format_comparison(stats), "",
              "Old network and reference fit on the toy (`format_resolution`):", "",
              toy_stats.format_resolution(stats), ""]

    if residuals:
        parts += ["#### Per-layer check on the 51 real rows", "",
                  "relID turned back into z at the layer with the toy's geometry and scaling, minus z0 + s "
                  "cot(theta) of the reco track (cm): `toy.stats.layer_residuals`.", ""]
        rows = []
        for sl in residuals["real"].index:
            r, t = residuals["real"].loc[sl], residuals["toy"].loc[sl]
            rows.append([sl, f"{int(r['rows'])}", f"{r['mean']:+.1f} / {t['mean']:+.1f}",
                         f"{r['std']:.1f} / {t['std']:.1f}", f"{r['mad']:.1f} / {t['mad']:.1f}",
                         f"{r['r']:.2f} / {t['r']:.2f}"])
        parts += [_md_table(["layer", "real rows", "mean real / toy", "std real / toy",
                             "median abs. dev. real / toy", "r (z at layer vs truth) real / toy"], rows), ""]
    if transfer:
        parts += ["#### Transfer: a network trained on the toy only", "",
                  "27 → 81 → 2, tanh, all experts together, 12 epochs on toy rows; z residual (cm).", ""]
        rows = [[k, str(v["rows"]), f"{v['net_r']:+.2f}", f"{v['net_std']:.1f} / {v['net_med']:.1f}",
                 f"{v['old_r']:+.2f}", f"{v['old_std']:.1f} / {v['old_med']:.1f}"] for k, v in transfer.items()]
        parts += [_md_table(["rows", "n", "toy-trained net: r(z, pred)", "net std / median\\|res\\|",
                             "old network: r", "old std / median\\|res\\|"], rows), ""]
    return "\n".join(parts)


def rewrite_section(doc: Path, body: str) -> None:
    """Replace the text between the markers in doc (created with just the markers if doc does not exist)."""
    text = doc.read_text() if doc.is_file() else f"{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: no {BEGIN} ... {END} section to rewrite")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")


def format_console(crit: pd.DataFrame) -> str:
    lines = []
    for g in criteria.CRITERIA_GROUPS:
        sub = crit[crit.group == g]
        lines.append(f"\n== {g}: {int(sub.ok.sum())} / {len(sub)} pass")
        for r in sub.itertuples():
            lines.append(f"  {'pass' if r.ok else 'MISS'}  {r.criterion:50s} real {r.real:10.4f}  toy {r.toy:10.4f}"
                         f"  ({r.limit})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=1, help="1: the default data set's train split")
    parser.add_argument("--stats", type=Path, default=real_sample.REAL_INPUT_STATS_FILE,
                        help="per-input statistics CSV")
    parser.add_argument("--sample", type=Path, default=real_sample.REAL_SAMPLE_FILE, help="real rows (optional)")
    parser.add_argument("--figures", type=Path, default=REPO_ROOT / "docs" / "toy_mc", help="figure folder")
    parser.add_argument("--doc", type=Path, default=REPO_ROOT / "docs" / "toy_mc.md", help="markdown to update")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--transfer", action="store_true", help="train a network on the toy, apply it to real rows")
    parser.add_argument("--transfer-tracks", type=int, default=150_000)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a criterion misses")
    args = parser.parse_args(argv)
    try:
        args.stats_label = os.path.relpath(args.stats, REPO_ROOT)
    except ValueError:
        args.stats_label = str(args.stats)

    if not args.no_doc and args.doc.is_file() and BEGIN not in args.doc.read_text():
        parser.error(f"{args.doc}: no {BEGIN} ... {END} section to rewrite")
    t0 = time.perf_counter()
    table = generator.generate(args.tracks, args.seed)
    print(f"{args.tracks} toy tracks (seed {args.seed}) in {time.perf_counter() - t0:.1f} s")
    real_inputs = real_sample.read_real_input_stats(args.stats)
    crit = criteria.criteria(table, real_inputs)
    print(format_console(crit))
    total = int(crit.ok.sum())
    print(f"\n{total} of {len(crit)} criteria pass")

    stats = toy_stats.summarize(table, reference=True)
    residuals, transfer = {}, None
    if args.sample.is_file():
        real_rows = pd.read_csv(args.sample, sep="\t")
        residuals = {"real": toy_stats.layer_residuals(real_rows), "toy": toy_stats.layer_residuals(table)}
        print("\nPer-layer residuals (cm), real rows:\n" + residuals["real"].round(2).to_string())
        print("toy:\n" + residuals["toy"].round(2).to_string())
        if args.transfer:
            transfer = transfer_check(real_rows, args.transfer_tracks, args.seed)
            for k, v in transfer.items():
                print(f"transfer, {k}: " + ", ".join(f"{a} {b:.3g}" for a, b in v.items()))
    elif args.transfer:
        print(f"no real rows at {args.sample}: transfer check skipped")

    if not args.no_doc:
        plt = _plt()
        args.figures.mkdir(parents=True, exist_ok=True)
        toy_inputs = toy_stats.input_stats(table)
        for col in INPUT_COLUMNS:
            rows = crit[(crit.group == "input") & crit.criterion.str.startswith(col + " ")]
            input_figure(plt, col, table[col].to_numpy(), real_inputs.loc[col], toy_inputs.loc[col], rows,
                         args.figures / f"{col}.png")
        figures = summary_figures(plt, table, stats, args.figures)
        fig_rel = os.path.relpath(args.figures, args.doc.resolve().parent).replace(os.sep, "/")
        rewrite_section(args.doc, markdown(crit, args, stats, fig_rel, figures, residuals, transfer))
        print(f"wrote {len(INPUT_COLUMNS) + len(figures)} figures to {args.figures} and the section of {args.doc}")
    return 1 if args.strict and total < len(crit) else 0


if __name__ == "__main__":
    sys.exit(main())
