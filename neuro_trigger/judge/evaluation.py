"""Evaluate a finished (or partly finished) run on any data: its networks, their predictions, the trigger's
metrics, and a new evaluation folder with the metrics, the prediction table, the figures and report.html.

The networks come from the run's `weights.json` (one entry per finished expert) and the hyperparameters
that build them: `config.json` of this project (a folder holding only those two files is enough; without
config.json, the config recorded in summary.json), or the `summary.json` of the original trainer
(juelg/belle2-pytorch-neuro-trigger), whose hyperparameters (`in_size`, `out_size`, `act`, `model`, and
`expert_N` blocks overriding them) are flat keys there.

    nets = load_networks(run_folder)        # RunNetworks: .networks {expert: nn.Module}, .config, ...
    pred = predict(nets, store)             # (N, 2) scaled, NaN for rows of experts without a network
    result = evaluate(run_folder, data=[...], cut_cm=15.0)   # writes RUN/evaluations/<name>_N/

Every mistake a user can make (a folder that is no run, no finished expert, a missing or corrupt
weights.json, a tensor of the wrong shape, a data file of the wrong format, a cut of 0 or below) raises
UserError before anything is written; an evaluation folder is claimed (atomically, never reused) only
once the metrics are computed, and removed again if writing into it fails.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuro_trigger import REPO_ROOT, registry
from neuro_trigger.data.dataset import ColumnStore, load_split
from neuro_trigger.data.neuroresults import NO_EXPERT
from neuro_trigger.errors import UserError, clip
from neuro_trigger.judge import metrics
from neuro_trigger.run.files import read_json, write_atomic, write_json
from neuro_trigger.run.folder import FolderNotCreated, claim_numbered_folder, library_versions
from neuro_trigger.run.weights import MODULE_PREFIX, TensorMisfit, expert_tensors, fitted_state

if TYPE_CHECKING:
    from torch import nn

SPLITS = ("train", "val", "test")
EVALUATIONS = "evaluations"
PREDICT_SLICE_ROWS = 1 << 16  # rows per forward pass: bounds the memory of one slice's copies
_EXPERT_KEY = re.compile(r"^expert_(-1|\d+)$")
_NETWORK_KEYS = ("model", "in_size", "out_size", "act")


@dataclass
class RunNetworks:
    """The networks of one run, ready to predict.

    config: resolved like config.json ({"name", "global", "experts": {"expert_N": {...}}}); for an original
    run built from its summary.json (the schema's defaults where it sets nothing). networks: expert -> the
    network (eval mode, CPU), only for experts with weights (finished). out_size: the smallest of the
    networks' (what every one of them predicts). summary: summary.json ({} where there is none).
    kind: "own" or "original". out_sizes and losses: per expert.
    """

    folder: Path
    config: dict[str, Any]
    networks: dict[int, nn.Module]
    out_size: int
    summary: dict[str, Any] = field(default_factory=dict)
    kind: str = "own"
    out_sizes: dict[int, int] = field(default_factory=dict)
    losses: dict[int, str] = field(default_factory=dict)

    @property
    def loss(self) -> str:
        """The run's loss (its global config's), for the metrics over all experts."""
        name = self.config.get("global", {}).get("loss")
        return name if name in registry.LOSSES else next(iter(self.losses.values()), "MSELoss")


@dataclass
class EvaluationResult:
    """What `evaluate` wrote: the new evaluation folder and the metrics (the content of its metrics.json)."""

    folder: Path
    metrics: dict[str, Any]


# ============================================================================================ networks
def load_networks(run_folder: Path | str) -> RunNetworks:
    """The networks of a run folder of this project (config.json + weights.json suffice) or of the original
    trainer (summary.json + weights.json), on the CPU in eval mode. UserError (one line) for a folder that
    is no run, a run without a finished expert, a missing or corrupt weights.json, or a tensor that does not
    fit its network."""
    folder = Path(run_folder)
    if not folder.exists():
        raise UserError(f"run folder {folder}: not found")
    if not folder.is_dir():
        raise UserError(f"run folder {folder}: is not a folder")
    summary = _read_optional_json(folder / "summary.json")
    if (folder / "config.json").exists():
        config = read_json(folder / "config.json", "evaluate")
        kind = "own"
    elif isinstance(summary, dict) and _own_config(summary) is not None:
        config, kind = _own_config(summary), "own"  # config.json lost: the copy in summary.json
    elif isinstance(summary, dict) and any(k in summary for k in (*_NETWORK_KEYS, "experts")):
        config, kind = _original_config(folder, summary), "original"
    else:
        raise UserError(f"run folder {folder}: is not a run folder (no config.json, and no summary.json "
                        f"of this project or of the original trainer)")
    experts = _expert_configs(folder, config, kind)
    weights_path = folder / "weights.json"
    if not weights_path.exists():
        raise UserError(f"run folder {folder}: weights.json is missing (a run writes it when its experts end; "
                        f"has any expert finished?)")
    weights = read_json(weights_path, "evaluate")
    if not isinstance(weights, dict):
        raise UserError(f"{weights_path}: is not a weights file (expected an object of experts, "
                        f"found {type(weights).__name__})")
    if not weights:
        raise UserError(f"run folder {folder}: no expert has finished (weights.json holds no network)")
    networks: dict[int, nn.Module] = {}
    out_sizes: dict[int, int] = {}
    losses: dict[int, str] = {}
    for key, entry in weights.items():
        match = _EXPERT_KEY.match(str(key))
        if match is None:
            raise UserError(f"{weights_path}: key '{clip(key)}' is not an expert (expected expert_N)")
        if key not in experts:
            raise UserError(f"{weights_path}: has weights for {key}, which the run's config does not configure "
                            f"(it configures {sorted(experts)})")
        cfg = experts[key]
        expert = int(match.group(1))
        networks[expert] = _network(cfg, entry, weights_path, key)
        out_sizes[expert] = int(cfg["out_size"])
        loss = cfg.get("loss")
        losses[expert] = loss if loss in registry.LOSSES else "MSELoss"
    summary = summary if isinstance(summary, dict) else {}
    return RunNetworks(folder=folder, config=config, networks=dict(sorted(networks.items())),
                       out_size=min(out_sizes.values()), summary=summary, kind=kind, out_sizes=out_sizes,
                       losses=losses)


def _read_optional_json(path: Path) -> Any:
    """A JSON file's content, or None where it is absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _own_config(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved config a summary.json of this project records, or None (not such a summary)."""
    recorded = summary.get("config")
    if isinstance(recorded, dict) and isinstance(recorded.get("global"), dict) \
            and isinstance(recorded.get("experts"), dict):
        return {"name": summary.get("config_name", "run"), "global": recorded["global"],
                "experts": recorded["experts"]}
    return None


def _original_config(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """A config like config.json from the original trainer's summary.json: its known keys over the schema's
    defaults, and its `expert_N` blocks over those per expert (the experts: the `expert_N` keys of
    weights.json, checked later, and its `experts` list)."""
    from neuro_trigger.config import defaults

    base = defaults()
    known = {k: v for k, v in summary.items() if k in base and k != "data"}
    if not isinstance(known.get("loss"), str):  # the original overwrote `loss` with its loss values
        known.pop("loss", None)
    glob = {**base, **known}
    glob.pop("data", None)
    data_path = summary.get("data_path")
    if isinstance(data_path, list) and len(data_path) == 3:
        glob["data"] = dict(zip(SPLITS, data_path, strict=True))
    listed = summary.get("experts") if isinstance(summary.get("experts"), list) else []
    keys = {f"expert_{e}" for e in listed if isinstance(e, int) and not isinstance(e, bool)}
    keys |= {k for k in summary if isinstance(k, str) and _EXPERT_KEY.match(k)}
    weights = _read_optional_json(folder / "weights.json")
    if isinstance(weights, dict):
        keys |= {k for k in weights if isinstance(k, str) and _EXPERT_KEY.match(k)}
    experts = {}
    for key in sorted(keys):
        block = summary.get(key) if isinstance(summary.get(key), dict) else {}
        experts[key] = {**glob, **{k: v for k, v in block.items() if k in base},
                        "expert": int(key.removeprefix("expert_"))}
    name = summary.get("config") if isinstance(summary.get("config"), str) else folder.parent.name
    return {"name": name, "global": glob, "experts": experts}


def _expert_configs(folder: Path, config: Any, kind: str) -> dict[str, dict[str, Any]]:
    """The per-expert configs, each checked for what building its network needs."""
    where = f"run folder {folder}: " + ("config.json" if kind == "own" else "summary.json")
    if not (isinstance(config, dict) and isinstance(config.get("experts"), dict)):
        raise UserError(f"{where} is not a run's config (no 'experts' object of per-expert configs)")
    if not isinstance(config.get("global"), dict):
        config["global"] = {}
    out = {}
    for key, cfg in config["experts"].items():
        if not isinstance(cfg, dict):
            raise UserError(f"{where}: '{clip(key)}' is not an object of config keys")
        checks = {"model": lambda v: v in registry.MODELS, "act": lambda v: v in registry.ACTIVATIONS,
                  "in_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  "out_size": lambda v: v in (1, 2) and not isinstance(v, bool)}
        for name, ok in checks.items():
            if name not in cfg:
                raise UserError(f"{where}: {key} lacks '{name}'")
            if not ok(cfg[name]):
                raise UserError(f"{where}: {key}.{name} = {clip(repr(cfg[name]))} cannot build a network")
        out[str(key)] = cfg
    return out


def _network(cfg: dict[str, Any], entry: Any, path: Path, key: str) -> nn.Module:
    """Build an expert's network from its config and load its weights.json entry (either layout), checking
    every tensor's declared and actual shape against the network (`run/weights.fitted_state`) and its values
    for NaN and infinities."""
    model = registry.build_model(cfg["model"], cfg["in_size"], cfg["out_size"], cfg["act"])
    where = f"{path}: {key}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} is not an object of tensors")
    try:
        tensors = expert_tensors(entry, str(path), key)
    except UserError:  # its message names the pre-training key; say it in our words
        raise UserError(f"{where}: neither the original layout {{'shapes', 'weights'}} nor "
                        f"{{name: {{'shape', 'values'}}}}") from None
    try:
        state = fitted_state(model.state_dict(), tensors, finite=True)
    except TensorMisfit as m:
        raise UserError(_misfit_message(m, where, cfg, tensors)) from None
    model.load_state_dict(state)
    return model.eval()


def _misfit_message(m: TensorMisfit, where: str, cfg: dict[str, Any], tensors: dict[str, Any]) -> str:
    full = MODULE_PREFIX + m.name
    match m.problem:
        case "missing":
            return (f"{where} lacks tensor '{full}' ({cfg['model']}, out_size {cfg['out_size']}; "
                    f"it has {clip(sorted(MODULE_PREFIX + n for n in tensors))})")
        case "declared shape":
            return (f"{where}.{full} has shape {clip(m.found)}, the network needs {m.need} "
                    f"({cfg['model']}, in_size {cfg['in_size']}, out_size {cfg['out_size']})")
        case "not numeric":
            return f"{where}.{full}: values are not a numeric array ({clip(m.error)})"
        case "shape":
            return f"{where}.{full} has values of shape {m.found}, the network needs {m.need}"
        case "not finite":
            return f"{where}.{full} holds NaN or infinite values"
        case "extra":
            return f"{where} has tensor '{full}' that a {cfg['model']} lacks (another model in its config?)"
    return f"{where}.{full}: {m.problem}"


# ============================================================================================ predictions
def predict(nets: RunNetworks, store: ColumnStore, device: str = "cpu",
            slice_rows: int = PREDICT_SLICE_ROWS) -> np.ndarray:
    """Every network on its expert's rows (a solo network, expert -1, on every row some expert takes),
    (N, 2) float32 scaled in row order: NaN for rows of experts without a network (and Expert -1 rows), and
    in the theta column where a network has out_size 1. In slices, without gradients, on `device`."""
    import torch

    pred = np.full((len(store), 2), np.nan, dtype=np.float32)
    with torch.no_grad():
        for expert, net in nets.networks.items():
            rows = store.expert_rows(expert)
            if not len(rows):
                continue
            net = net.to(device).eval()
            k = nets.out_sizes.get(expert, nets.out_size)
            for a in range(0, len(rows), slice_rows):
                part = rows[a:a + slice_rows]
                x = torch.from_numpy(np.ascontiguousarray(store.x[part], dtype=np.float32)).to(device)
                pred[part, :k] = net(x)[:, :k].cpu().numpy()
            if device != "cpu":
                net.to("cpu")
    return pred


def covered_rows(nets: RunNetworks, store: ColumnStore) -> np.ndarray:
    """Boolean (N,): the rows some network of the run predicts."""
    if -1 in nets.networks:
        return np.asarray(store.expert) >= 0
    return np.isin(store.expert, list(nets.networks))


def judge_predictions(nets: RunNetworks, store: ColumnStore, pred: np.ndarray,
                      cut_cm: float = metrics.TRIGGER_CUT_CM) -> dict[str, Any]:
    """The trigger's metrics (`metrics.judge`) per network on its expert's rows, and over all experts (every
    row some expert takes; rows without a network are in `rows` there but in no other figure), with the
    counts of rows left without a prediction: {"experts": {"expert_N": judge}, "all": judge, "rows": {...}}."""
    expert = np.asarray(store.expert)
    covered = covered_rows(nets, store)
    per_expert: dict[str, Any] = {}
    for e in nets.networks:
        rows = store.expert_rows(e)
        if len(rows):
            per_expert[f"expert_{e}"] = _judge(store, pred, rows, nets.out_sizes.get(e, nets.out_size),
                                               nets.losses.get(e, "MSELoss"), cut_cm)
    all_rows = np.flatnonzero(expert != NO_EXPERT)
    overall = _judge(store, pred, all_rows, nets.out_size, nets.loss, cut_cm)
    missing = (expert != NO_EXPERT) & ~covered
    present, counts = np.unique(expert[missing], return_counts=True)
    rows = {"total": int(len(store)), "with_network": int(np.count_nonzero(covered)),
            "without_network": int(np.count_nonzero(missing)),
            "without_network_by_expert": {f"expert_{e}": int(n) for e, n in zip(present, counts, strict=True)},
            "no_expert": int(np.count_nonzero(expert == NO_EXPERT))}
    return {"experts": per_expert, "all": overall, "rows": rows}


def _judge(store: ColumnStore, pred: np.ndarray, rows: np.ndarray, k: int, loss: str,
           cut_cm: float) -> dict[str, Any]:
    # the full target (both columns): with out_size 1 the reco theta still bins the z residual
    return metrics.judge(store.y[rows], pred[rows, :k], store.y_old[rows, :k], loss,
                         expert=store.expert[rows], ntracks=store.ntracks[rows], cut_cm=cut_cm)


# ============================================================================================ evaluate
def evaluate(run_folder: Path | str, data: list[str | Path] | None = None, split: str = "test",
             cut_cm: float = metrics.TRIGGER_CUT_CM, out_root: Path | None = None) -> EvaluationResult:
    """Run the networks of `run_folder` on `data` (neuroresults files, .gz or plain, concatenated in order;
    default: the run's own `split`) and write a new folder `<out_root>/<name>_N/` (out_root default
    RUN/evaluations; name: the split, or the first data file's stem; N the next free number): metrics.json,
    pred_data_<name>.csv (the Belle II rows unchanged plus NewZ NewTheta, nan where no network), plots/ (PNG)
    and report.html. Returns the folder and the metrics. UserError (one line, nothing written) for bad input."""
    cut = _check_cut(cut_cm)
    folder = Path(run_folder)
    nets = load_networks(folder)
    if isinstance(data, str | Path):
        data = [data]
    if data:
        paths = [Path(p) for p in data]
        name = _safe_name(_stem(paths[0]))
        what = f"data {', '.join(p.name for p in paths)}"
        used_split = None
    else:
        if split not in SPLITS:
            raise UserError(f"split '{clip(split)}' is not one of {', '.join(SPLITS)}")
        paths = _split_paths(nets, split)
        name, what, used_split = split, f"{split} split", split
    store = load_split(paths)
    if not np.any(covered_rows(nets, store)):
        found = sorted({int(e) for e in np.unique(store.expert)})
        raise UserError(f"{what}: none of its {len(store)} rows belongs to an expert the run has a network for "
                        f"(networks: experts {sorted(nets.networks)}; the data's experts: {found})")
    pred = predict(nets, store)
    judged = judge_predictions(nets, store, pred, cut)
    result = {
        "run": str(folder.resolve()),
        "run_kind": nets.kind,
        "config_name": nets.config.get("name"),
        "name": name,
        "split": used_split,
        "data": store.sources,
        "cut_cm": cut,
        "thresholds_cm": {"cut": cut, "ip": metrics.IP_CM, "background": metrics.BACKGROUND_CM},
        "out_size": nets.out_size,
        "networks": [f"expert_{e}" for e in nets.networks],
        "created": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        **judged,
    }
    root = Path(out_root) if out_root is not None else folder / EVALUATIONS
    root_existed = root.exists()
    target = _claim_folder(root, name)
    try:
        _write_evaluation(target, nets, store, pred, result, what)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if not root_existed:
            try:
                root.rmdir()  # only if empty: another evaluation may have started meanwhile
            except OSError:
                pass
        raise
    return EvaluationResult(folder=target, metrics=result)


def _check_cut(cut_cm: Any) -> float:
    try:
        cut = float(cut_cm)
    except (TypeError, ValueError):
        raise UserError(f"trigger cut {clip(repr(cut_cm))}: not a number of cm") from None
    if not math.isfinite(cut) or cut <= 0:
        raise UserError(f"trigger cut {cut_cm} cm: it must be a finite number above 0 (the trigger keeps "
                        f"|z_pred| < cut)")
    return cut


def _stem(path: Path) -> str:
    """A data file's name without .gz and its format suffix (neuroresults_random3.gz -> neuroresults_random3)."""
    name = path.name
    if name.endswith(".gz"):
        name = name[:-3]
    stem = Path(name).stem
    return stem or name or "data"


def _safe_name(text: str) -> str:
    """A folder name from a file name: letters, digits, '.', '-' and '_' kept, anything else '_'."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "data"
    return safe[:80]


def _split_paths(nets: RunNetworks, split: str) -> list[Path]:
    """The data files of one of the run's own splits: config.json's `data` (relative to the repository), or
    the original's `data_path`."""
    entry = (nets.config.get("global") or {}).get("data")
    files = entry.get(split) if isinstance(entry, dict) else None
    if isinstance(files, str):
        files = [files]
    if not (isinstance(files, list) and files and all(isinstance(f, str) for f in files)):
        raise UserError(f"run folder {nets.folder}: its config records no {split} data files; name them with --data")
    if nets.kind == "own":
        from neuro_trigger.data.selection import data_paths

        return data_paths({"data": {s: files for s in SPLITS}})[split]  # generates the toy data if named
    return [p if p.is_absolute() else REPO_ROOT / p for p in map(Path, files)]


def _claim_folder(root: Path, name: str, max_attempts: int = 1000) -> Path:
    """Create and return root/<name>_N, N one above the highest there (0 first), claimed atomically
    (`claim_numbered_folder`) so that two evaluations at once never share a folder."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {root}: {e.strerror or e}") from None
    try:
        folder = claim_numbered_folder(root, name, max_attempts)
    except FolderNotCreated as e:
        raise UserError(f"cannot create {e.folder}: {e.error.strerror or e.error}") from None
    if folder is None:
        raise UserError(f"could not claim a new evaluation folder in {root} after {max_attempts} attempts")
    return folder


def _write_evaluation(folder: Path, nets: RunNetworks, store: ColumnStore, pred: np.ndarray,
                      result: dict[str, Any], what: str) -> None:
    """metrics.json, the prediction table, the figures and report.html into a claimed folder."""
    from neuro_trigger.data.neuroresults import write_predictions

    write_json(folder / "metrics.json", result)
    table = folder / f"pred_data_{result['name']}.csv"
    try:
        write_predictions([s["path"] for s in store.sources], table, pred, rows=[s["rows"] for s in store.sources])
    except ValueError as e:
        raise UserError(f"{what}: cannot write the prediction table {table}: {e}") from None
    figures = _figures(folder, nets, store, pred, result, what)
    _report(folder, nets, result, figures, what)


def _figures(folder: Path, nets: RunNetworks, store: ColumnStore, pred: np.ndarray, result: dict[str, Any],
             what: str) -> dict[str, dict[str, bytes]]:
    """The overlaid figures (new and old network) per expert and, with more than one network, over all
    experts, as PNG files under plots/<expert_N | all>/; returns their bytes by group and caption."""
    from neuro_trigger.judge import plots

    groups: list[tuple[str, str, np.ndarray, int]] = []
    for e in nets.networks:
        rows = store.expert_rows(e)
        if len(rows):
            label = "solo network (all experts)" if e == -1 else f"expert {e}"
            groups.append((f"expert_{e}", label, rows, nets.out_sizes.get(e, nets.out_size)))
    if len(groups) > 1:
        rows = np.flatnonzero(covered_rows(nets, store))
        groups.append(("all", "all experts", rows, nets.out_size))
    out: dict[str, dict[str, bytes]] = {}
    for key, label, rows, k in groups:
        title = f"{label}, {what}"
        figs = plots.overlay_figures(store.y[rows, :k], {"new": pred[rows, :k]}, store.y_old[rows, :k], k,
                                     cut_cm=result["cut_cm"], title=title)
        out[key] = {}
        for fig_name, fig in figs.items():
            png = plots.figure_to_png(fig)
            file_name = _safe_name(fig_name) + ".png"
            write_atomic(folder / "plots" / key / file_name, lambda f, png=png: f.write(png))
            out[key][f"{title}: {fig_name}"] = png
    return out


def _run_git_id(nets: RunNetworks) -> str:
    path = nets.folder / "git_id.txt"
    try:
        return path.read_text().strip() or "-"
    except OSError:
        git_id = nets.summary.get("git_id")
        return str(git_id).strip() if git_id else "not recorded"


def _report(folder: Path, nets: RunNetworks, result: dict[str, Any], figures: dict[str, dict[str, bytes]],
            what: str) -> None:
    """report.html: the verdict table, the figures, then what was evaluated on which data with which code."""
    from neuro_trigger.judge import report

    rows = result["rows"]
    sections: list[Any] = [report.verdict_table(result["experts"], result["all"])]
    counted = {
        "run": result["run"],
        "run kind": "this project" if nets.kind == "own" else "the original trainer",
        "networks": ", ".join(result["networks"]),
        "evaluated on": what,
        "trigger cut": f"|z| < {result['cut_cm']:g} cm (efficiency on |reco z| < {metrics.IP_CM:g} cm, "
                       f"rejection on |reco z| > {metrics.BACKGROUND_CM:g} cm)",
        "rows": rows["total"],
        "rows with a network": rows["with_network"],
        "rows of experts without a network (NaN predictions)": rows["without_network"],
        "rows without a network, by expert": ", ".join(f"{k}: {n}" for k, n in
                                                       rows["without_network_by_expert"].items()) or "-",
        "rows with Expert -1 (no expert takes them)": rows["no_expert"],
    }
    sections.append(report.KeyValues("Evaluation", counted))
    for key, figs in figures.items():
        sections.append(report.Figures("All experts" if key == "all" else key.replace("_", " "), figs))
    sections.append(report.KeyValues("Data files", {s["path"]: f"{s['rows']} rows, sha256 {s['sha256']}"
                                                    for s in result["data"]}))
    sections.append(report.KeyValues("Code and libraries", {"git id of the run": _run_git_id(nets),
                                                            **library_versions()}))
    sections.append(report.Code("Config of the run", json.dumps(nets.config, indent=1, default=str)))
    sections.append(report.Text("TensorBoard", f"tensorboard --logdir {nets.folder}" if nets.kind == "own"
                                else f"tensorboard --logdir {nets.folder} (the original's logs, where kept)"))
    title = f"Evaluation of {nets.config.get('name', nets.folder.name)} ({nets.folder.name}) on {what}"
    report.write_report(folder / "report.html", title, sections)
