"""The neuroresults columns, their dtypes and value ranges, and the error every malformed file ends in."""
from __future__ import annotations

from pathlib import Path

from neuro_trigger.errors import UserError

EVENT_COLUMNS = ["Experiment", "Run", "Subrun", "Event", "Track", "nTracks", "Expert", "iNodes", "oNodes"]
INPUT_COLUMNS = [f"SL{sl}-{name}" for sl in range(9) for name in ("relID", "driftT", "alpha")]
TARGET_COLUMNS = ["RecoZ", "RecoTheta"]
OLD_COLUMNS = ["ScaleZ", "RawZ", "ScaleTheta", "RawTheta"]
COLUMNS = EVENT_COLUMNS + INPUT_COLUMNS + TARGET_COLUMNS + OLD_COLUMNS
INT_COLUMNS = EVENT_COLUMNS + ["RawZ", "RawTheta"]
PREDICTION_COLUMNS = ["NewZ", "NewTheta"]
# the new network on the trigger hardware (fixed point): its output integers, and them in the scale of NewZ NewTheta
HARDWARE_COLUMNS = ["HwRawZ", "HwRawTheta", "HwZ", "HwTheta"]

FINITE_COLUMNS = INPUT_COLUMNS + TARGET_COLUMNS
"""Columns in which NaN or inf is a format error (the old network's output may be NaN)."""
NO_EXPERT = -1
"""Expert of a track that no expert takes (two or more stereo superlayers missing): a legitimate row
that is kept in the store (rows stay aligned with the file) but never trained on."""
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "Expert": (NO_EXPERT, 4),
    **{name: (-1.0, 1.0) for name in INPUT_COLUMNS},  # the hardware scales every input to [-1, 1]
    "RecoZ": (-1.0, 1.0),  # z in [-100, 100] cm
    "RecoTheta": (-1.0, 1.0),  # theta in [10, 170] degrees
}
"""Closed range of every checked column (docs/data.md, "Value ranges"); a value outside, NaN or inf
is a DataFormatError naming the first such line and how many rows have it."""


class DataFormatError(UserError):
    """A neuroresults file that cannot be read; the message is one line "path:line: what"."""

    def __init__(self, path: str | Path, line: int | None, what: str) -> None:
        self.path = str(path)
        self.line = line
        self.what = " ".join(str(what).split())
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {self.what}")
