"""Where and in what precision an expert trains: the config keys `accelerator`, `devices` and `precision`.

`check_hardware` holds a resolved config against this machine before a run folder is made;
`trainer_hardware` and `torch_device` turn one expert's config into the Trainer's arguments and
the device its tensors go to, the two always agreeing (`auto`: the CUDA GPU if one is visible,
else the CPU; never Apple's MPS, which Lightning's own `auto` would take).

CUDA and forking: the machine is asked only through `torch.cuda.device_count()`, which counts the
GPUs through NVML and does not initialise CUDA in this process where NVML answers (where it does
not, torch falls back to `cudaGetDeviceCount`, which calls `cuInit`). `torch.cuda.is_available()`
is not used: without PYTORCH_NVML_BASED_CUDA_CHECK=1 it always calls `cuInit`, which torch's docs
say "poisons fork" (a process forked afterwards may not use CUDA). Only a bf16 precision on a GPU
needs more: the device's properties, through `torch.cuda.is_bf16_supported()` (what torch's
autocast itself asks), which initialises CUDA in this process, and on a GPU without native bf16
(compute capability < 8) creates a context there to try a bf16 tensor. That is safe for the
runner: expert processes come from a fork server (a fresh interpreter) or are spawned, never
forked from this process.
"""
from __future__ import annotations

from typing import Any

import torch

from neuro_trigger.errors import UserError, clip

GPU = "gpu"
CPU = "cpu"
ACCELERATOR_ALIASES = {"cuda": GPU}  # config/resolution.py reads `cuda` as `gpu` already; kept for hand-made dicts
PRECISION_ALIASES = {"32": "32-true", "64": "64-true"}
# Lightning 2.6 builds a CPU Trainer for every precision, but turns 16-mixed into bf16-mixed there (with a
# warning): the run would not be what its config says. 16-true does train on the CPU (float16 weights).
CPU_PRECISIONS_REFUSED = {
    "16-mixed": "Lightning has no float16 AMP on the CPU and would train in bf16-mixed instead",
}


def gpu_count() -> int:
    """CUDA GPUs visible to this process (CUDA_VISIBLE_DEVICES respected), without initialising CUDA
    where NVML answers; 0 with a CPU-only torch."""
    return torch.cuda.device_count()


def _accelerator(config: dict[str, Any]) -> str:
    """`gpu` or `cpu`: what the expert's `accelerator` means on this machine."""
    asked = str(config.get("accelerator", "auto"))
    asked = ACCELERATOR_ALIASES.get(asked, asked)
    if asked == "auto":
        return GPU if gpu_count() > 0 else CPU
    return asked


def _precision(config: dict[str, Any]) -> str:
    precision = str(config.get("precision", "32-true"))
    return PRECISION_ALIASES.get(precision, precision)


def check_hardware(resolved: dict[str, Any]) -> None:
    """Raise UserError (one line naming the config, the expert and the key) if an expert of the resolved
    config (`resolve_config`'s result, or a run's config.json) cannot train on this machine as configured:
    a GPU asked for where none is visible, more devices than there are (or than one), or a precision
    the chosen device does not support. Call it before a run folder is made."""
    name = clip(str(resolved.get("name", "?")))
    for key, config in resolved.get("experts", {}).items():
        problem = _problem(config)
        if problem is not None:
            setting, text = problem
            raise UserError(f"config '{name}': {key}: key '{setting}': {text}")


def _problem(config: dict[str, Any]) -> tuple[str, str] | None:
    """(config key, what is wrong) for the first setting of one expert this machine cannot honour."""
    asked = str(config.get("accelerator", "auto"))
    asked = ACCELERATOR_ALIASES.get(asked, asked)
    if asked not in ("auto", CPU, GPU):
        return "accelerator", f"unknown accelerator '{clip(asked)}'; known: auto, cpu, gpu"
    devices = config.get("devices", 1)
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
        return "devices", f"must be a positive integer, got {clip(repr(devices))}"
    gpus = gpu_count()
    if asked == GPU and gpus == 0:
        return "accelerator", ("'gpu' but no CUDA GPU is visible to this process "
                               "(CUDA_VISIBLE_DEVICES, driver or a CPU-only torch); use 'auto' or 'cpu'")
    accelerator = _accelerator(config)
    where = "the CPU" if accelerator == CPU else "a GPU"
    if asked == "auto":
        where += " (accelerator 'auto': " + ("no CUDA GPU visible)" if accelerator == CPU else "a CUDA GPU is visible)")
    if devices > 1:
        have = f"this machine has {gpus} GPU(s); " if accelerator == GPU and devices > gpus else ""
        return "devices", f"{devices} on {where}: {have}an expert trains on one device (devices=1)"
    precision = _precision(config)
    if accelerator == CPU and precision in CPU_PRECISIONS_REFUSED:
        return "precision", (f"'{precision}' is not supported on {where}: {CPU_PRECISIONS_REFUSED[precision]}; "
                             "use bf16-mixed or 32-true there")
    if accelerator == GPU and precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        return "precision", (f"'{precision}' is not supported on {where}: torch.cuda.is_bf16_supported() is "
                             "False for cuda:0; use 32-true or 16-mixed")
    return None


def trainer_hardware(config: dict[str, Any]) -> dict[str, Any]:
    """`lightning.Trainer(**trainer_hardware(config))` arguments for one expert's config: accelerator
    (`gpu` or `cpu`, never `auto`), devices (1) and precision (its canonical spelling)."""
    return {"accelerator": _accelerator(config), "devices": 1, "precision": _precision(config)}


def torch_device(config: dict[str, Any]) -> torch.device:
    """Where one expert's tensors go: cuda:0 (the device Lightning picks for devices=1) or the CPU,
    as `trainer_hardware(config)` decides."""
    return torch.device("cuda", 0) if _accelerator(config) == GPU else torch.device(CPU)
