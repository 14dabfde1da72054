"""What a run shows on the console: this project's log lines, every expert's progress at once, and the
verdict per expert at the end."""
from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("neuro_trigger")


class _Console(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and notebooks replace it between runs)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_console() -> None:
    """This project's log lines on the console (once per process), from the first step of a run."""
    if not any(isinstance(h, _Console) for h in log.handlers):
        console = _Console()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)


def setup_logging(folder: Path) -> logging.Handler:
    handler = logging.FileHandler(folder / "app.log", encoding="utf-8", errors="surrogateescape")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    setup_console()
    return handler


def verdict_lines(summary: dict[str, Any], resolved: dict[str, Any], split: str = "val") -> list[str]:
    """One line per expert for the console: how it ended, its epochs, and new against old on `split`."""
    lines = []
    metrics = summary.get("metrics", {}).get(split, {}).get("experts", {})
    for key, state in summary["experts"].items():
        status = state.get("status", "unknown")
        if status != "finished":
            lines.append(f"{key}: {status}" + (f": {state['error']}" if state.get("error") else ""))
            continue
        epochs, most = state.get("epochs_done", 0), resolved["experts"][key]["epochs"]
        stop = f"early stop after {epochs}/{most} epochs" if epochs < most else f"{epochs}/{most} epochs"
        m = metrics.get(key, {}).get("unfiltered", {})
        lines.append(f"{key}: {stop}; {split} z resolution {_number(m, 'z_diff_std_cm', '.2f')} cm "
                     f"(old {_number(m, 'old_z_diff_std_cm', '.2f')} cm), "
                     f"loss vs old {_number(m, 'loss_vs_old', '.3f')}"
                     + _on_hardware(metrics.get(key, {}).get("trigger")))
    overall = summary.get("metrics", {}).get(split, {}).get("trigger_all") or {}
    if "hardware" in overall:
        lines.append(f"all experts: {split} z resolution {_number(overall['new']['z'], 'std', '.2f')} cm"
                     + _on_hardware(overall))
    without = (summary.get("hardware") or {}).get("without")
    if without:  # once for the run, not once per expert or split
        from neuro_trigger.judge.hardware import no_hardware_line

        lines.append(no_hardware_line(without))
    return lines


def _on_hardware(judged: dict[str, Any] | None) -> str:
    """The hardware's numbers of a judge() output beside the float network's ("" where it has none)."""
    if not judged or "hardware" not in judged:
        return ""
    differ = judged["hardware_vs_float"]
    return (f"; on the hardware {_number(judged['hardware']['z'], 'std', '.2f')} cm, |\u0394z| max "
            f"{_number(differ, 'z_abs_diff_max_cm', '.3f')} mean {_number(differ, 'z_abs_diff_mean_cm', '.4f')} cm, "
            f"{differ['flipped']} decision(s) flipped")


def _number(metrics: dict[str, Any], name: str, fmt: str) -> str:
    value = metrics.get(name)
    return format(value, fmt) if isinstance(value, int | float) else "n/a"


def expert_key(message: dict) -> str:
    """The expert a progress message is about (`expert_N`): processes send their number, launchers the key."""
    return message["expert"] if isinstance(message["expert"], str) else f"expert_{message['expert']}"


class ProgressView:
    """Every expert's progress at once: redrawn in place on a terminal, a line per epoch elsewhere."""

    def __init__(self, keys: list[str], show: bool = True, min_interval: float = 1.0) -> None:
        self.rows = {k: "waiting" for k in keys}
        self.show = show
        self.tty = sys.stderr.isatty()
        self.drawn = 0
        self.last = 0.0
        self.min_interval = min_interval

    def update(self, message: dict) -> None:
        key = expert_key(message)
        status = message.get("status", "")
        if "epoch" in message and status in ("training", "finished"):
            text = f"epoch {message['epoch'] + 1:>4}/{message.get('max_epochs', '?')}  " \
                   f"val_loss {message.get('val_loss', math.nan):.5f}"
            ratio = message.get("val_loss_vs_old_loss")
            if ratio is not None and not math.isnan(ratio):
                text += f"  vs old {ratio:.3f}"
            text = f"{status:<9} {text}"
        else:
            text = status + (f": {message['error']}" if message.get("error") else "")
        if status != "training" and self.rows.get(key) == text:
            return  # said already (a failure is reported by the process and again from its status)
        self.rows[key] = text
        if not self.show:
            return
        now = time.time()
        if self.tty:
            if now - self.last >= self.min_interval or status not in ("training",):
                self._redraw()
                self.last = now
        elif status != "training" or now - self.last >= 10 * self.min_interval:
            print(f"{key}: {text}", file=sys.stderr, flush=True)
            self.last = now

    def _redraw(self) -> None:
        if self.drawn:
            sys.stderr.write(f"\x1b[{self.drawn}F")
        for key, text in self.rows.items():
            sys.stderr.write(f"\x1b[2K{key:>10}  {text}\n")
        sys.stderr.flush()
        self.drawn = len(self.rows)

    def close(self) -> None:
        if self.show and self.tty:
            self._redraw()
