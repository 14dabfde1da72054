"""The report of a sweep's folder (`write_sweep_report`): `report.html` beside trials.csv, one self-contained page.

It reads what the sweep left: sweep.json (the sweep's definition), trials.csv (every trial), summary.json,
best/winners_config.json and the studies' journal (for Optuna's parameter importances). The page: the sweep
(name, config, sampler, objective and direction, trials per state, the space), the winners (the keys of each
winner's config that differ from the sweep's config, a link to best/report.html), then per expert its best
trials, the history of the search, the objective against each parameter (sweep/report_figures.py), the
parameters' importances and the trials that gave no objective. The markup is in sweep/templates/ (Jinja2,
every value escaped), its style sheet judge's report.css; figures are inline PNGs, nothing is fetched.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import numpy as np
import pandas as pd

from neuro_trigger.judge.report import MISSING, REPORT_FILE, format_value, png_bytes
from neuro_trigger.run.files import read_json, write_atomic
from neuro_trigger.sweep import studies
from neuro_trigger.sweep.records import COLUMNS, STATES, column
from neuro_trigger.sweep.report_figures import history_figure, parameter_figure
from neuro_trigger.sweep.space import Param, Sweep
from neuro_trigger.sweep.trial import read_record

log = logging.getLogger(__name__)

TOP_TRIALS = 5  # the best trials of each expert listed
PAGE = "sweep/sweep_report.html"
OBJECTIVE_LABELS = {"z_resolution": "val z resolution [cm]", "val_loss": "best val loss",
                    "rejection_at_efficiency": "val rejection at {target:.0%} efficiency"}
IMPORTANCE_NOTE = ("Optuna's parameter importances (optuna.importance.get_param_importances with its PED-ANOVA "
                   "evaluator) from the expert's finished trials, summing to 1: how much of the objective's "
                   "spread among the good trials each parameter explains. With few trials they are rough.")


def write_sweep_report(folder: Path) -> Path | None:
    """Write `<folder>/report.html` for a sweep folder and return its path. Never fails the sweep: on any
    error it logs a warning and returns None."""
    try:
        return _write_sweep_report(Path(folder))
    except Exception as error:  # noqa: BLE001 - a report must never fail the sweep it describes
        log.warning("sweep report.html not written for %s: %s: %s", folder, type(error).__name__, error)
        return None


def read_trials(folder: Path) -> pd.DataFrame:
    """trials.csv with `trial`, `epochs` and `objective` as numbers (NaN: none) and every other cell as the text
    the file holds (a parameter's value as written)."""
    table = pd.read_csv(folder / "trials.csv", dtype=str, keep_default_na=False, encoding="utf-8")
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"trials.csv has no column {', '.join(missing)}")
    table["trial"] = table["trial"].astype(int)
    for name in ("epochs", "objective"):
        table[name] = pd.to_numeric(table[name], errors="coerce")
    return table


def ranked(trials: pd.DataFrame, direction: str) -> pd.DataFrame:
    """The finished trials with an objective, best first (the lower trial number first among equals, as best/
    chooses)."""
    done = trials[(trials["state"] == "finished") & np.isfinite(trials["objective"])]
    return done.sort_values(["objective", "trial"], ascending=[direction == "minimize", True], kind="stable")


def importances(folder: Path, spec: Sweep, expert: int, finished: int) -> tuple[list[tuple[str, float]], str]:
    """(parameter, Optuna's importance) of the expert's study, most important first, and ""; or no importances
    and why not (`finished`: the expert's finished trials)."""
    params = spec.params_of(expert)
    if len(params) < 2:
        what = f"one parameter ({params[0].key})" if params else "no parameter"
        return [], f"not computed: the expert's study has {what}, nothing to compare"
    if finished < 2:
        return [], f"not computed: {finished} finished trial(s); Optuna needs at least 2"
    import optuna

    studies.quiet_optuna()
    study = optuna.load_study(study_name=studies.study_name(expert), storage=studies.storage(folder))
    found = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    return [(key, float(value)) for key, value in found.items()], ""


def _uri(figure: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(figure)).decode("ascii")


def _link(relative: str) -> str:
    """A link from report.html to a folder or file of the sweep folder (relative, so the folder can move)."""
    return quote(relative.strip("/"))


def _cell(text: str, param: Param) -> str:
    """A parameter's value from trials.csv as the report shows it: a range's float with 4 significant digits."""
    if param.kind in ("float", "log"):
        try:
            return format_value(float(text))
        except ValueError:
            return text or MISSING
    return "None" if text == "" and None in param.values else text


def _space_rows(spec: Sweep) -> list[list[str]]:
    rows = []
    for p in spec.params:
        if p.kind == "choice":
            values = ", ".join(repr(v) for v in p.values)
        else:
            values = f"{p.values[0]!r} to {p.values[1]!r}" + (f", step {p.values[2]!r}" if len(p.values) > 2 else "")
        rows.append([p.key, p.kind, values])
    return rows


def _counts(trials: pd.DataFrame) -> dict[str, int]:
    return {state: int((trials["state"] == state).sum()) for state in STATES}


def _expert_view(folder: Path, spec: Sweep, expert: int, trials: pd.DataFrame, label: str) -> dict[str, Any]:
    """One expert's part of the page: its counts, best trials, figures, importances, trials without objective."""
    key = f"expert_{expert}"
    mine = trials[trials["expert"] == key]
    params = spec.params_of(expert)
    order = ranked(mine, spec.direction)
    best = int(order["trial"].iloc[0]) if len(order) else None
    top = [{"cells": [int(r["trial"]), format_value(float(r["objective"])), format_value(r["epochs"]),
                      *(_cell(r[column(p.key)], p) for p in params)],
            "href": _link(r["folder"]), "folder": r["folder"], "best": int(r["trial"]) == best}
           for _, r in order.head(TOP_TRIALS).iterrows()]
    figures = [("objective per trial, and the best so far", _uri(history_figure(mine, label, spec.direction, best)))]
    figures += [(f"objective against {p.key}", _uri(parameter_figure(mine, p, label, best))) for p in params]
    try:
        ranks, reason = importances(folder, spec, expert, len(order))
    except Exception as error:  # noqa: BLE001 - the rest of the report is still worth having
        log.warning("sweep report of %s: %s importances: %s: %s", folder, key, type(error).__name__, error)
        ranks, reason = [], f"not computed: {type(error).__name__}: {error}"
    without = []
    for _, r in mine[~np.isfinite(mine["objective"])].iterrows():
        record = read_record(folder / r["folder"]) or {}
        without.append([int(r["trial"]), r["state"], format_value(r["epochs"]),
                        record.get("error") or ("stopped: a resume trains it" if r["state"] == "interrupted"
                                                else MISSING)])
    return {"key": key, "title": key.replace("_", " "), "counts": _counts(mine), "best": best,
            "columns": ["trial", spec.objective, "epochs", *(p.key for p in params)], "top": top,
            "figures": figures, "importances": [(k, f"{v:.3f}", v) for k, v in ranks], "reason": reason,
            "without": without}


def _winners(folder: Path, spec: Sweep, trials: pd.DataFrame) -> dict[str, Any]:
    """The winner of each expert: its trial, objective, and the keys of its config that differ from the sweep's
    config (best/winners_config.json)."""
    path = folder / "best" / "winners_config.json"
    config = read_json(path, "winners_config.json") if path.is_file() else None
    rows = []
    for expert in spec.experts:
        key = f"expert_{expert}"
        order = ranked(trials[trials["expert"] == key], spec.direction)
        if not len(order):
            rows.append({"key": key, "trial": MISSING, "objective": MISSING, "href": None,
                         "differ": "no finished trial"})
            continue
        first = order.iloc[0]
        block = (config or {}).get(key)
        differ = MISSING if block is None else json.dumps(block, default=str) if block else "nothing"
        rows.append({"key": key, "trial": int(first["trial"]), "objective": format_value(float(first["objective"])),
                     "href": _link(first["folder"]), "differ": differ})
    return {"rows": rows, "config": None if config is None else json.dumps(config, indent=2, default=str),
            "report": "best/report.html" if (folder / "best" / REPORT_FILE).is_file() else None,
            "command": f"python neuro_trigger/main.py {folder / 'best' / 'winners_config.json'} -p"}


def _header(folder: Path, saved: dict[str, Any], spec: Sweep, summary: dict[str, Any],
            counts: dict[str, int]) -> list[tuple[str, str]]:
    target = f", read at {spec.target_efficiency:.0%} efficiency" if spec.objective == "rejection_at_efficiency" \
        else ""
    pruner = spec.pruner if spec.pruner == "none" else (
        f"{spec.pruner} (after {spec.pruner_startup_trials} finished trial(s), from epoch "
        f"{spec.pruner_warmup_epochs})")
    description = " / ".join(d for d in (spec.description, saved.get("description", "")) if d) or MISSING
    return [("sweep", spec.name), ("description", description), ("folder", str(folder)),
            ("config", spec.config + (f" with -m {' '.join(spec.overrides)}" if spec.overrides else "")),
            ("mode", str(saved.get("mode", MISSING))), ("status", str(summary.get("status", "unknown"))),
            ("sampler", f"{spec.sampler}, seed {spec.seed}"),
            ("objective", f"{spec.objective}, {spec.direction}d{target}"), ("pruner", pruner),
            ("trials per expert", ", ".join(f"expert {e}: {spec.budget(e)}" for e in spec.experts)),
            ("trials", ", ".join(f"{n} {state}" for state, n in counts.items())),
            ("started", str(saved.get("started", MISSING))), ("ended", str(summary.get("end_time", MISSING)))]


@functools.cache
def _templates() -> jinja2.Environment:
    """sweep/templates/ (the page) beside judge/templates/ (the style sheet every report shares); every value
    put into them HTML-escaped."""
    loader = jinja2.PrefixLoader({
        "sweep": jinja2.PackageLoader("neuro_trigger.sweep", "templates", encoding="utf-8"),
        "judge": jinja2.PackageLoader("neuro_trigger.judge", "templates", encoding="utf-8")})
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def _write_sweep_report(folder: Path) -> Path:
    saved = read_json(folder / "sweep.json", "sweep.json")
    spec = Sweep.from_dict(saved["sweep"])
    trials = read_trials(folder)
    summary = read_json(folder / "summary.json", "summary.json") if (folder / "summary.json").is_file() else {}
    label = OBJECTIVE_LABELS[spec.objective].format(target=spec.target_efficiency)
    counts = _counts(trials)
    experts = [_expert_view(folder, spec, e, trials, label) for e in spec.experts]
    page = _templates().get_template(PAGE).render(
        title=f"NeuroTrigger sweep {spec.name} / {folder.name}",
        generated=datetime.now().astimezone().isoformat(timespec="seconds"),
        header=_header(folder, saved, spec, summary, counts), space=_space_rows(spec), states=list(STATES),
        total=counts, experts=experts, winners=_winners(folder, spec, trials), objective=spec.objective,
        importance_note=IMPORTANCE_NOTE, top=TOP_TRIALS)
    path = folder / REPORT_FILE
    data = page.encode("utf-8", errors="surrogateescape")
    write_atomic(path, lambda f: f.write(data))
    log.info("sweep report: %s", path)
    return path
