"""The precision scan of a run: how many fractional bits each of its networks needs on the hardware.

Each network the hardware can run is emulated bit for bit (`fpga.fixed_point.forward`) on its expert's rows
(the run's validation split unless other data is named) at the node, weight and table widths
`fpga.width_search` chooses, and judged by its z resolution and its efficiency at the trigger's cut against
the float network's on the same rows. Into a new folder RUN/precision_scans/<name>_N/ go the table
(precision_scan.csv, one row per network and measured point), the figure (precision_scan.png) and
precision_scan.json (the criterion, the data, the smallest widths per network).

    result = precision_scan(run_folder)        # PrecisionScanResult: .folder, .table, .lines()

A folder that is no run, a run without weights or without a network the hardware can run, or data without
rows of those networks: UserError (one line), nothing written.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuro_trigger.data.dataset import load_split, z_to_cm
from neuro_trigger.errors import UserError
from neuro_trigger.fpga import width_search
from neuro_trigger.fpga.fixed_point import Precision, forward, hardware_layers
from neuro_trigger.fpga.width_search import AXES, Outcome, ScanResult
from neuro_trigger.judge import trigger
from neuro_trigger.judge.evaluation import check_cut, chosen_data, claim_folder
from neuro_trigger.judge.networks import RunNetworks, load_networks, predict
from neuro_trigger.run.files import write_atomic, write_json

SCANS = "precision_scans"
TABLE = "precision_scan.csv"
FIGURE = "precision_scan"
COLUMNS = ["expert", "scan", "node", "weight", "lut", "rows", "z_std_cm", "z_std_vs_float", "efficiency",
           "efficiency_vs_float", "rejection", "within", "smallest"]
CRITERION = (f"z resolution (std of reco z - predicted z) at most {width_search.RESOLUTION_FACTOR:g} times the "
             f"float network's, and efficiency at the cut at least the float network's minus "
             f"{width_search.EFFICIENCY_DROP:g}, on the same rows")


@dataclass
class PrecisionScanResult:
    """What `precision_scan` wrote (folder, table) and found: per scanned network ("expert_N") its float
    outcome and scan; the networks left out, each with why."""

    folder: Path
    table: pd.DataFrame
    references: dict[str, Outcome] = field(default_factory=dict)
    scans: dict[str, ScanResult] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The console's lines: the networks left out, the folder, then one line per network: its smallest
        widths one at a time and together."""
        out = [f"{key}: {why}; skipped" for key, why in self.skipped.items()]
        out.append(str(self.folder))
        for key, found in self.scans.items():
            out.append(_smallest_line(key, found, self.references[key]))
        return out


def _smallest_line(key: str, found: ScanResult, reference: Outcome) -> str:
    alone = ", ".join(f"{'table' if axis == 'lut' else axis} "
                      + (str(found.smallest[axis]) if found.smallest[axis] is not None
                         else f">{max(width_search.WIDTHS)}") for axis in AXES)
    base = width_search.BASF2
    line = f"{key}: smallest widths within 1% of float: {alone} (one at a time, others at " \
           f"{base.node}/{base.weight}/{base.lut})"
    if found.joint is None:
        return line + "; together: none found in the scan"
    got = found.measured[found.joint]
    return (line + f"; together node/weight/table {found.joint.node}/{found.joint.weight}/{found.joint.lut}: "
            f"z std {got.z_std_cm:.3f} cm (float {reference.z_std_cm:.3f}), efficiency {got.efficiency:.4f} "
            f"(float {reference.efficiency:.4f})")


def hardware_networks(nets: RunNetworks) -> tuple[dict[int, tuple[list, str]], dict[str, str]]:
    """The networks the hardware can run, expert -> (their layers, activation); and the others, "expert_N" ->
    why they have no hardware equivalent."""
    runnable: dict[int, tuple[list, str]] = {}
    others: dict[str, str] = {}
    for expert, net in nets.networks.items():
        cfg = nets.config["experts"].get(f"expert_{expert}", {})
        activation = cfg.get("act", "?")
        layers = hardware_layers(net, activation)
        if layers is None:
            others[f"expert_{expert}"] = (f"a {cfg.get('model', 'network')} with activation '{activation}' has no "
                                          f"hardware equivalent (the trigger runs linear layers each followed by "
                                          f"tanh/2 or tanh)")
        else:
            runnable[expert] = (layers, activation)
    return runnable, others


def outcome(reco_cm: np.ndarray, pred_cm: np.ndarray, cut_cm: float) -> Outcome:
    """The z resolution (std of reco - predicted, cm), the efficiency and the rejection at `cut_cm` of
    predictions in cm."""
    at_cut = trigger.trigger_metrics(reco_cm, pred_cm, cut_cm)
    return Outcome(z_std_cm=trigger.resolution(reco_cm - pred_cm)["std"], efficiency=at_cut["efficiency"],
                   rejection=at_cut["rejection"])


def hardware_z_cm(layers: list, x: np.ndarray, precision: Precision, activation: str) -> np.ndarray:
    """The hardware's z output in cm: its output integers over 2^node, scaled as the float network's."""
    raw = forward(layers, x, precision, activation)
    return z_to_cm(raw[:, 0] / 2.0**precision.node)


def precision_scan(run_folder: Path | str, data: list[str | Path] | None = None, split: str = "val",
                   cut_cm: float = trigger.TRIGGER_CUT_CM, out_root: Path | None = None) -> PrecisionScanResult:
    """Scan every network of `run_folder` the hardware can run on its expert's rows of `data` (default the
    run's own `split`, val), and write table, figure and JSON into `<out_root>/<name>_N/` (out_root default
    RUN/precision_scans; name: the split or the first file's stem). UserError for bad input, nothing written."""
    cut = check_cut(cut_cm)
    folder = Path(run_folder)
    nets = load_networks(folder)
    runnable, skipped = hardware_networks(nets)
    if not runnable:
        raise UserError(f"run folder {folder}: none of its networks has a hardware equivalent ("
                        + "; ".join(f"{k}: {why}" for k, why in skipped.items()) + "); nothing to scan")
    paths, name, what, used_split = chosen_data(nets, data, split)
    store = load_split(paths)
    pred = predict(nets, store)
    result = PrecisionScanResult(folder=folder, table=pd.DataFrame(columns=COLUMNS), skipped=skipped)
    rows: dict[str, int] = {}
    for expert, (layers, activation) in runnable.items():
        key = f"expert_{expert}"
        picked = store.expert_rows(expert)
        if not len(picked):
            result.skipped[key] = f"no rows in the {what}"
            continue
        x = np.ascontiguousarray(store.x[picked], dtype=np.float32)
        reco = z_to_cm(store.y[picked, 0].astype(np.float64))
        reference = outcome(reco, z_to_cm(pred[picked, 0].astype(np.float64)), cut)

        def measure(precision: Precision, layers=layers, activation=activation, x=x, reco=reco) -> Outcome:
            return outcome(reco, hardware_z_cm(layers, x, precision, activation), cut)

        result.references[key] = reference
        result.scans[key] = width_search.scan(measure, reference)
        rows[key] = len(picked)
    if not result.scans:
        raise UserError(f"{what}: no rows of the experts whose networks the hardware can run "
                        f"({', '.join(f'expert_{e}' for e in runnable)}); nothing scanned")
    result.table = scan_table(result.scans, result.references, rows)
    info = {"run": str(folder.resolve()), "config_name": nets.config.get("name"), "name": name, "split": used_split,
            "data": store.sources, "cut_cm": cut, "criterion": CRITERION, "widths": list(width_search.WIDTHS),
            "others_at": {axis: getattr(width_search.BASF2, axis) for axis in AXES},
            "experts": {key: _expert_info(scan, result.references[key], rows[key])
                        for key, scan in result.scans.items()},
            "skipped": result.skipped}
    root = Path(out_root) if out_root is not None else folder / SCANS
    root_existed = root.exists()
    result.folder = claim_folder(root, name)
    try:
        _write(result.folder, result.table, info, f"{nets.config.get('name', folder.name)} ({folder.name}), {what}")
    except BaseException:
        shutil.rmtree(result.folder, ignore_errors=True)
        if not root_existed:
            try:
                root.rmdir()
            except OSError:
                pass
        raise
    return result


def _expert_info(found: ScanResult, reference: Outcome, rows: int) -> dict[str, Any]:
    joint = found.joint
    return {"rows": rows, "float": vars(reference), "smallest_one_at_a_time": found.smallest,
            "smallest_together": None if joint is None else {**vars(joint), **vars(found.measured[joint])}}


def scan_table(scans: dict[str, ScanResult], references: dict[str, Outcome], rows: dict[str, int]) -> pd.DataFrame:
    """One row per network and point of each scan ("node", "weight", "lut", "joint"), after a "float" row with
    the float network's outcome: the widths, the outcome, its ratio (resolution) and difference (efficiency)
    to the float network's, the rejection (for the record), whether it is within 1%, and whether it is the
    scan's smallest."""
    records = []
    for key, found in scans.items():
        ref = references[key]
        records.append({"expert": key, "scan": "float", "rows": rows[key], "z_std_cm": ref.z_std_cm,
                        "z_std_vs_float": 1.0, "efficiency": ref.efficiency, "efficiency_vs_float": 0.0,
                        "rejection": ref.rejection,
                        "within": True, "smallest": False})
        for name, points in found.scans.items():
            for p in points:
                got = found.measured[p]
                smallest = (p == found.joint) if name == "joint" else getattr(p, name) == found.smallest[name]
                records.append({"expert": key, "scan": name, "node": p.node, "weight": p.weight, "lut": p.lut,
                                "rows": rows[key], "z_std_cm": got.z_std_cm,
                                "z_std_vs_float": got.z_std_cm / ref.z_std_cm,
                                "efficiency": got.efficiency, "efficiency_vs_float": got.efficiency - ref.efficiency,
                                "rejection": got.rejection,
                                "within": width_search.within(got, ref), "smallest": bool(smallest)})
    table = pd.DataFrame.from_records(records, columns=COLUMNS)
    for column in AXES:
        table[column] = table[column].astype("Int64")
    return table


def _write(folder: Path, table: pd.DataFrame, info: dict[str, Any], title: str) -> None:
    """The table, the figure and the JSON into a claimed folder."""
    from neuro_trigger.judge.figure_files import save_figures
    from neuro_trigger.judge.precision_figure import scan_figure

    text = table.to_csv(index=False, float_format="%.6g").encode("utf-8")
    write_atomic(folder / TABLE, lambda f: f.write(text))
    save_figures({FIGURE: scan_figure(table, title)}, folder)
    write_json(folder / "precision_scan.json", info)
