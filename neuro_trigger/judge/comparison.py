"""Compare finished runs side by side, on one common data set, as the trigger judges them.

`compare(runs)` runs the networks of every run (of this project or of the original trainer) on the same
rows (`data` files, or the first run's `split` files), judges each run per expert and over all experts
with `metrics.judge` (and, for networks with a hardware equivalent, the hardware beside the float network:
`judge/hardware.py`), and writes a new, never-overwritten folder `log/comparisons/<name>_N/`:

  comparison.csv     the table: one row per (run, expert) and per (run, "all")
  metrics.json       every judge() result, per run and expert
  config_diff.json   the configs' differences key by key (global and per expert), the git ids, the data
  figures/*.png      overlaid figures (one colour per run, the old network as reference), all and per expert
  report.html        all of the above in one self-contained page

Everything a user can get wrong (too few runs, a folder that is no run, runs of different out_size, no
common data, a cut of 0 or below) is a UserError raised before anything is written.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults.format import NO_EXPERT
from neuro_trigger.errors import UserError
from neuro_trigger.judge.compared_runs import (
    OTHER_DATA,
    UNKNOWN_DATA,
    check_arguments,
    common_paths,
    data_relation,
    expert_facts,
    experts_of_run,
    git_id,
    loss_name,
    out_size,
    run_labels,
    seconds_between,
    training_data_id,
)
from neuro_trigger.judge.comparison_table import ComparisonResult, format_table, frame, table_row
from neuro_trigger.judge.config_diff import config_diff, flatten

__all__ = ["COMPARISONS", "OTHER_DATA", "ComparisonResult", "claim_folder", "compare", "config_diff", "flatten",
           "format_table"]

COMPARISONS = "comparisons"


# ---------------------------------------------------------------------------------------------- output folder
def _folder_name(configs: list[dict], runs: list[Path]) -> str:
    names = [str(c.get("name") or r.parent.name) for c, r in zip(configs, runs, strict=True)]
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "-vs-".join(names)).strip("._") or "comparison"
    return name[:120]


def claim_folder(parent: Path, name: str, max_attempts: int = 1000) -> Path:
    """Create and return `parent/<name>_N` with N the next free number (0 first), claimed with os.mkdir so that
    two comparisons started at once never share a folder."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {parent}: {exc.strerror or exc}") from None
    pattern = re.compile(re.escape(name) + r"_(\d+)$")
    for _ in range(max_attempts):
        taken = [int(m.group(1)) for m in map(pattern.match, os.listdir(parent)) if m]
        folder = parent / f"{name}_{max(taken) + 1 if taken else 0}"
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from None
        return folder
    raise UserError(f"could not claim a new folder {name}_N in {parent} after {max_attempts} attempts")


# ---------------------------------------------------------------------------------------------- compare
def compare(runs: list[Path], split: str = "test", data: list[str | Path] | None = None, cut_cm: float = 15.0,
            out_root: Path | None = None) -> ComparisonResult:
    """Judge every run on one common data set and write the comparison folder (see the module doc).

    `data`: the common files; without them the first run's `split` files (from its config.json). Runs whose
    recorded data (summary.json content hashes) are not the common files are evaluated on them all the same and
    flagged "trained on other data" in the table. `out_root` replaces `<repo>/log` (tests).
    """
    from neuro_trigger.data.dataset import load_split
    from neuro_trigger.judge.comparison_report import write_comparison  # matplotlib: once the arguments are checked
    from neuro_trigger.judge.hardware import judge_hardware, network_hardware, no_hardware_line
    from neuro_trigger.judge.networks import load_networks, predict
    from neuro_trigger.judge.trigger import judge

    runs = [Path(r) for r in runs]
    check_arguments(runs, split, cut_cm)
    cut_cm = float(cut_cm)
    loaded = [load_networks(run) for run in runs]
    configs = [n.config if isinstance(n.config, dict) else {} for n in loaded]
    labels = run_labels(runs, configs)
    sizes = {label: out_size(n) for label, n in zip(labels, loaded, strict=True)}
    if len(set(sizes.values())) > 1:
        raise UserError("runs with different out_size cannot be compared: "
                        + ", ".join(f"{label} has {size}" for label, size in sizes.items()))
    k = next(iter(sizes.values()))
    paths = common_paths(runs[0], labels[0], split, data)
    store = load_split(paths)
    common = [s["sha256"] for s in store.sources]
    what = f"{split} split of {labels[0]}" if not data else ", ".join(Path(s["path"]).name for s in store.sources)

    target, old = store.y[:, :k], store.y_old[:, :k]
    rows: list[dict] = []
    metrics: dict[str, dict[str, dict]] = {}
    preds: dict[str, np.ndarray] = {}
    experts_of: dict[str, list[int]] = {}
    notes: list[str] = []
    reference_id = training_data_id(loaded[0].summary if isinstance(loaded[0].summary, dict) else {})
    for run, nets, label in zip(runs, loaded, labels, strict=True):
        summary = nets.summary if isinstance(nets.summary, dict) else {}
        pred = np.asarray(predict(nets, store), dtype=np.float32)[:, :k]
        preds[label] = pred
        hardware = network_hardware(nets, store)  # the networks on the trigger's fixed-point arithmetic
        hw = hardware.scaled[:, :k]
        if hardware.without:
            notes.append(no_hardware_line(hardware.without, label))
        note = data_relation(summary, common, reference_id)
        training = training_data_id(summary) or UNKNOWN_DATA
        if note.startswith(OTHER_DATA):
            notes.append(f"{label} was trained on other data files than {labels[0]} (the content hashes of its train "
                         f"and val files in summary.json differ); every run is evaluated on the common data")
        elif note == UNKNOWN_DATA:
            notes.append(f"{label} records no content hashes of its data (a run of the original trainer?): "
                         f"whether it was trained on the same data is unknown")
        if nets.left_out:  # a partly finished run: its finished experts' networks only
            notes.append(f"{label} is judged without " + ", ".join(f"{k} ({why})" for k, why in nets.left_out.items())
                         + ": no finished network")
        experts_of[label] = experts_of_run(nets, store)
        metrics[label] = {}
        for expert in experts_of[label]:
            key = f"expert_{expert}"
            idx = np.flatnonzero(store.expert == expert)
            judged = judge(target[idx], pred[idx], old[idx], loss_name(nets, expert), store.expert[idx],
                           store.ntracks[idx], cut_cm=cut_cm)
            if key in hardware.experts:
                judged.update(judge_hardware(target[idx], pred[idx], hw[idx], loss_name(nets, expert), cut_cm))
            metrics[label][str(expert)] = judged
            rows.append(table_row(label, str(expert), note, training, judged, *expert_facts(run, summary, key)))
        idx = np.flatnonzero(store.expert != NO_EXPERT)  # every row some expert takes, as evaluate judges "all"
        judged = judge(target[idx], pred[idx], old[idx], loss_name(nets, None), store.expert[idx],
                       store.ntracks[idx], cut_cm=cut_cm)
        if hardware.complete:  # over all experts only where every network has them
            judged.update(judge_hardware(target[idx], pred[idx], hw[idx], loss_name(nets, None), cut_cm))
        metrics[label]["all"] = judged
        seconds = seconds_between(summary.get("start_time"), summary.get("end_time"))
        rows.append(table_row(label, "all", note, training, judged, None, seconds))
    table = frame(rows)
    diff = config_diff(configs, labels)
    diff["git_ids"] = {label: git_id(run, n.summary if isinstance(n.summary, dict) else {})
                       for run, n, label in zip(runs, loaded, labels, strict=True)}
    figures = _figures(target, old, store.expert, preds, experts_of, k, cut_cm, what)

    folder = claim_folder(Path(out_root if out_root is not None else REPO_ROOT / "log") / COMPARISONS,
                          _folder_name(configs, runs))
    result = ComparisonResult(folder=folder, table=table, labels=labels, config_diff=diff, data=list(store.sources),
                              metrics=metrics, notes=notes)
    try:
        write_comparison(result, runs, split, cut_cm, what, figures)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a comparison is written whole or not at all
        raise
    return result


def _figures(target: np.ndarray, old: np.ndarray, expert: np.ndarray, preds: dict[str, np.ndarray],
             experts_of: dict[str, list[int]], k: int, cut_cm: float, what: str) -> dict[str, dict[str, bytes]]:
    """Overlaid figures as PNG bytes: over all experts, and per expert for the runs that have that expert."""
    from neuro_trigger.judge.figure_files import figure_to_png
    from neuro_trigger.judge.overlays import overlay_figures

    groups: dict[str, dict[str, bytes]] = {}
    figs = overlay_figures(target, preds, old, k, cut_cm, f"all experts, {what}")
    groups["all experts"] = {name: figure_to_png(fig) for name, fig in figs.items()}
    for e in sorted({e for es in experts_of.values() for e in es}):
        idx = np.flatnonzero(expert == e)
        these = {label: pred[idx] for label, pred in preds.items() if e in experts_of[label]}
        if idx.size == 0 or not these:
            continue
        figs = overlay_figures(target[idx], these, old[idx], k, cut_cm, f"expert {e}, {what}")
        groups[f"expert {e}"] = {name: figure_to_png(fig) for name, fig in figs.items()}
    return groups
