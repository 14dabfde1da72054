"""Where `train`, `resume` and `run_expert` used to live; kept so that existing notebooks and scripts
(`from neuro_trigger.training.experts import train`) go on working. New code imports them from
`neuro_trigger.runner.api` and `neuro_trigger.training.expert`."""
from __future__ import annotations

import importlib
from typing import Any

_MOVED = {
    "train": "neuro_trigger.runner.api", "resume": "neuro_trigger.runner.api",
    "RunResult": "neuro_trigger.runner.api", "DEBUG_ROOT": "neuro_trigger.runner.api",
    "run_expert": "neuro_trigger.training.expert", "build_trainer": "neuro_trigger.training.expert",
    "data_paths": "neuro_trigger.data.selection", "load_data": "neuro_trigger.data.selection",
    "expert_rows": "neuro_trigger.data.selection", "check_rows": "neuro_trigger.data.selection",
    "threads_per_expert": "neuro_trigger.runner.local", "start_process_server": "neuro_trigger.runner.processes",
    "stop_process_server": "neuro_trigger.runner.processes", "process_context": "neuro_trigger.runner.processes",
    "verdict_lines": "neuro_trigger.runner.console", "ProgressView": "neuro_trigger.runner.console",
}


def __getattr__(name: str) -> Any:
    # imported when first asked for: the runner depends on training, not the other way round
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MOVED[name]), name)
