"""A run's float networks as ONNX models: one file per expert (expert_N.onnx), input `x` of shape (batch, 27),
output `y` of shape (batch, out_size), the batch dimension dynamic.

Each model carries in its metadata_props what a user of it needs: the input columns in order and their scaling
(none in the model: the inputs come scaled to [-1, 1] as in the neuroresults files), the output columns and the
ranges their -1..1 map onto, the expert and its stereo hit pattern, model, activation and config name, and the
check it passed. That check runs before anything is written: onnxruntime must give PyTorch's outputs within
`TOLERANCE` on the expert's validation rows (its filter applied), or, where the run's data cannot be loaded,
on `RANDOM_ROWS` random inputs in [-1, 1].
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import THETA_RANGE_DEG, Z_RANGE_CM, load_split
from neuro_trigger.data.neuroresults.format import INPUT_COLUMNS, PREDICTION_COLUMNS
from neuro_trigger.data.selection import data_paths, expert_rows
from neuro_trigger.errors import UserError, clip
from neuro_trigger.fpga.export import STEREO_PATTERN
from neuro_trigger.run.files import write_atomic
from neuro_trigger.run.folder import write_new_folder

FORMAT = "neuro_trigger expert network"
FORMAT_VERSION = 1
TOLERANCE = 1e-6  # largest |onnxruntime - PyTorch| allowed on any output of any check row
RANDOM_ROWS = 4096
CHECK_SLICE_ROWS = 1 << 16  # rows per forward pass in the check: bounds its memory
INPUT_NAME, OUTPUT_NAME = "x", "y"
INPUT_SCALING = ("none in the model: each input comes scaled to [-1, 1] by the trigger's preprocessing, as the "
                 "neuroresults columns are (relID over the superlayer's window of wires, driftT by the maximal "
                 "drift time, alpha the crossing angle)")


@dataclass
class CheckRows:
    """The inputs an expert's model is checked on, and what they are (for the console and the metadata)."""

    x: np.ndarray  # (N, in_size) float32
    what: str  # "validation rows" or "random inputs in [-1, 1]"


@dataclass
class ExportedExpert:
    """One expert's checked model: the file's bytes and the check it passed."""

    key: str
    data: bytes
    rows: int
    what: str
    max_diff: float


def check_inputs(config: Mapping[str, Any], seed: int = 0) -> tuple[dict[str, CheckRows], str | None]:
    """Per expert of `config` (a run's, as config.json) the rows its model is checked on: its validation rows
    after its filter, read from the run's configured files; random inputs in [-1, 1] for an expert without
    such rows. The second value says why the validation data could not be loaded (None where it was)."""
    experts = config["experts"]
    store, why = None, None
    try:
        store = load_split(data_paths(config["global"])["val"])
    except (UserError, OSError, KeyError, TypeError, ValueError) as error:
        why = clip(str(error) if isinstance(error, UserError | OSError) else f"no data files configured ({error})")
    rng = np.random.default_rng(seed)
    inputs = {}
    for key, cfg in sorted(experts.items()):
        rows = np.empty(0, dtype=np.int64)
        if store is not None:
            with contextlib.suppress(UserError, KeyError, TypeError, ValueError):  # a filter it cannot apply
                rows = expert_rows(store, cfg)
        if len(rows):
            inputs[key] = CheckRows(np.ascontiguousarray(store.x[rows, : cfg["in_size"]], np.float32),
                                    "validation rows")
        else:
            inputs[key] = CheckRows(rng.uniform(-1, 1, (RANDOM_ROWS, cfg["in_size"])).astype(np.float32),
                                    "random inputs in [-1, 1]")
    return inputs, why


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """The exporter's prints, warnings and log lines (torch's handlers write to the console) held back."""
    text = io.StringIO()
    disabled = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
            warnings.simplefilter("ignore")
            yield text
    finally:
        logging.disable(disabled)


def _first_line(error: BaseException) -> str:
    """The innermost cause's first line: the exporter wraps the reason in pages of advice."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return clip(f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__, 200)


def to_onnx(key: str, model, config: Mapping[str, Any]):
    """The network as an onnx.ModelProto (the dynamo exporter, quietly, on the CPU, batch dimension dynamic).
    UserError (one line) for a network torch cannot export."""
    import onnx
    import torch

    model = model.cpu().eval()
    example = (torch.zeros(2, int(config["in_size"])),)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(model, example, None, dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], verbose=False,
                                        dynamic_shapes=({0: torch.export.Dim("batch")},))
            proto = program.model_proto
            onnx.checker.check_model(proto, full_check=True)
    except Exception as error:  # the exporter raises many kinds (torch.export's, onnxscript's, the checker's)
        raise UserError(f"{key}: the {config['model']} with activation '{config['act']}' cannot be exported to "
                        f"ONNX ({_first_line(error)}); nothing exported") from None
    return proto


def metadata(config: Mapping[str, Any], config_name: str, run_folder: Path) -> dict[str, str]:
    """The metadata_props of one expert's model (every value a string; lists and tables as JSON)."""
    out_size = int(config["out_size"])
    scaling = {"z_cm": list(Z_RANGE_CM), "theta_deg": list(THETA_RANGE_DEG)}
    expert = config.get("expert")
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "expert": str(expert),
            "stereo_hit_pattern": STEREO_PATTERN.get(expert, "?"), "model": str(config["model"]),
            "activation": str(config["act"]), "config_name": str(config_name),
            "run_folder": str(Path(run_folder).resolve()),
            "input_names": json.dumps(INPUT_COLUMNS[: int(config["in_size"])]), "input_scaling": INPUT_SCALING,
            "output_names": json.dumps(PREDICTION_COLUMNS[:out_size]),
            "output_scaling": json.dumps(dict(list(scaling.items())[:out_size])),
            "output_scaling_meaning": "each output's -1..1 maps linearly onto its range (z in cm, theta in degrees)"}


def max_difference(data: bytes, model, x: np.ndarray) -> float:
    """The largest |onnxruntime - PyTorch| over every output of the rows `x` (inf where either gives NaN)."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no runtime notes on the console
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for a in range(0, len(x), CHECK_SLICE_ROWS):
            part = x[a:a + CHECK_SLICE_ROWS]
            ours = model(torch.from_numpy(part)).numpy()
            theirs = session.run([OUTPUT_NAME], {INPUT_NAME: part})[0]
            if ours.shape != theirs.shape:
                return float("inf")
            diff = np.abs(theirs.astype(np.float64) - ours.astype(np.float64))
            worst = max(worst, float(diff.max(initial=0.0)) if np.isfinite(diff).all() else float("inf"))
    return worst


def export_expert(key: str, model, config: Mapping[str, Any], config_name: str, run_folder: Path,
                  rows: CheckRows) -> ExportedExpert:
    """One expert exported, its metadata set and checked against PyTorch on `rows`; UserError (one line) where
    it cannot be exported or onnxruntime cannot run it or gives other outputs."""
    import onnx

    proto = to_onnx(key, model, config)
    proto.graph.name = f"{config_name}_{key}"
    proto.doc_string = f"NeuroTrigger {key} of {config_name}: docs/hardware.md, Export"
    props = metadata(config, config_name, run_folder)
    onnx.helper.set_model_props(proto, props)
    try:
        with _quiet():
            worst = max_difference(proto.SerializeToString(), model, rows.x)
    except Exception as error:  # onnxruntime's kinds: invalid graph, an op it lacks, ...
        raise UserError(f"{key}: onnxruntime cannot run the exported model ({_first_line(error)}); "
                        f"nothing exported") from None
    if not worst <= TOLERANCE:
        raise UserError(f"{key}: the ONNX model's outputs differ from PyTorch's by up to {worst:.3g} (allowed "
                        f"{TOLERANCE:g}) on {len(rows.x):,} {rows.what}; nothing exported")
    # the graph is unchanged by the record of its check: the bytes checked and written compute the same
    onnx.helper.set_model_props(proto, {**props, "check": json.dumps(
        {"rows": len(rows.x), "of": rows.what, "max_abs_diff": worst, "tolerance": TOLERANCE,
         "against": "PyTorch float32 on the CPU, onnxruntime CPUExecutionProvider"})})
    return ExportedExpert(key, proto.SerializeToString(), len(rows.x), rows.what, worst)


def write_onnx(networks: Mapping[str, tuple[Any, Mapping[str, Any]]], config_name: str, run_folder: Path,
               inputs: Mapping[str, CheckRows], out: Path | None = None) -> tuple[Path, list[ExportedExpert]]:
    """Every expert of `networks` (key -> (network, its config)) as `key`.onnx in a new folder, `out` (which must
    not exist yet) or `run_folder`/exports/onnx_N/: all exported and checked on `inputs[key]` before the folder
    appears, whole (`write_new_folder`)."""
    done = [export_expert(key, model, config, config_name, run_folder, inputs[key])
            for key, (model, config) in sorted(networks.items())]

    def write(folder: Path) -> None:
        for expert in done:
            write_atomic(folder / f"{expert.key}.onnx", lambda f, data=expert.data: f.write(data))

    return write_new_folder(write, run_folder / "exports", "onnx", out), done
