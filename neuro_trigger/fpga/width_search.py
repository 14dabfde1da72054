"""How many fractional bits a network needs: the precision scan's design, its criterion and its searches
(docs/hardware.md, "How many bits").

The caller says how a network does at one `Precision` (`measure`: its z resolution and its efficiency at the
trigger's cut); this module decides which precisions to try and which are the smallest that stay within 1%
of the float network:

- one width at a time: each of node, weight and table over `WIDTHS` (1 to 16 bits), the other two at basf2's
  12/10/10; the smallest width of an axis is the smallest from which on every wider one passes;
- together: the combinations with no width below its one-at-a-time minimum, in order of their sum of bits,
  from the three minima's sum upwards; at the first sum where one passes, the pick is the passing one with
  the smallest table, then the smallest weight. Every combination of that region with a smaller sum was
  measured and fails. Narrower combinations outside the region are not tried: on a few thousand rows a
  width that fails alone may pass by chance together with others (the criterion is not monotonic there),
  and a width below what the network needs with the others generous is no design to build on.

"Within 1%" (`within`): z resolution (the std of reco z minus predicted z) at most 1.01 times the float
network's, and efficiency at the cut at least the float network's minus 0.01 (one percentage point), both
on the same rows.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from neuro_trigger.fpga.fixed_point import BASF2_PRECISION, Precision

AXES = ("node", "weight", "lut")
BASF2 = Precision.from_basf2(BASF2_PRECISION)  # 12/10/10: the other widths while one is scanned
WIDTHS = range(1, 17)
RESOLUTION_FACTOR = 1.01  # z resolution at most this times the float network's
EFFICIENCY_DROP = 0.01  # efficiency at the cut at least the float network's minus this (absolute)
JOINT_LIMIT = 300  # at most this many combinations measured by the joint search (per network)


@dataclass(frozen=True)
class Outcome:
    """How a network does on its rows: z resolution (std of the residual, cm) and efficiency at the cut; and,
    for the record only (no part of the criterion), its background rejection at the cut."""

    z_std_cm: float
    efficiency: float
    rejection: float = math.nan


def within(outcome: Outcome, reference: Outcome) -> bool:
    """Within 1% of the float network (`reference`): resolution at most RESOLUTION_FACTOR times its, and
    efficiency at most EFFICIENCY_DROP below its (not judged where the rows hold no track from the IP)."""
    resolution_ok = outcome.z_std_cm <= RESOLUTION_FACTOR * reference.z_std_cm
    if math.isnan(reference.efficiency):
        return resolution_ok
    return resolution_ok and outcome.efficiency >= reference.efficiency - EFFICIENCY_DROP


def possible(precision: Precision) -> bool:
    """Whether the hardware's table can be built: no width below 0, the table no finer than nodes + weights."""
    return min(precision.node, precision.weight, precision.lut) >= 0 \
        and precision.lut <= precision.node + precision.weight


def axis_points(axis: str, widths: Iterable[int] = WIDTHS, base: Precision = BASF2) -> list[Precision]:
    """The precisions of one axis's scan: `axis` over `widths`, the others as in `base`."""
    points = [replace(base, **{axis: int(w)}) for w in widths]
    return [p for p in points if possible(p)]


def smallest_on_axis(passes: dict[int, bool]) -> int | None:
    """The smallest width from which on every wider one passes (so that one narrower fails, or none was
    tried); None where the widest fails."""
    smallest = None
    for width in sorted(passes, reverse=True):
        if not passes[width]:
            break
        smallest = width
    return smallest


@dataclass
class ScanResult:
    """Every measured precision with its outcome and the scans it was measured for; the smallest width per
    axis (None: not even the widest passes) and the smallest combination (None: none found)."""

    measured: dict[Precision, Outcome] = field(default_factory=dict)
    scans: dict[str, list[Precision]] = field(default_factory=dict)
    smallest: dict[str, int | None] = field(default_factory=dict)
    joint: Precision | None = None


def scan(measure: Callable[[Precision], Outcome], reference: Outcome, widths: Iterable[int] = WIDTHS,
         joint_limit: int = JOINT_LIMIT) -> ScanResult:
    """The whole scan of one network: each axis, then the joint search (module docstring). Every precision is
    measured once however many scans it belongs to."""
    widths = sorted(set(widths))
    result = ScanResult()

    def passes(precision: Precision) -> bool:
        if precision not in result.measured:
            result.measured[precision] = measure(precision)
        return within(result.measured[precision], reference)

    for axis in AXES:
        points = axis_points(axis, widths)
        result.scans[axis] = points
        result.smallest[axis] = smallest_on_axis({getattr(p, axis): passes(p) for p in points})
    if any(v is None for v in result.smallest.values()):
        result.scans["joint"] = []
        return result
    tried: list[Precision] = []

    def try_(precision: Precision) -> bool:
        tried.append(precision)
        return passes(precision)

    lower = Precision(**{axis: int(result.smallest[axis]) for axis in AXES})
    result.joint = _joint(try_, lower, widths, joint_limit)
    result.scans["joint"] = list(dict.fromkeys(tried))
    return result


def _joint(passes: Callable[[Precision], bool], lower: Precision, widths: list[int], limit: int
           ) -> Precision | None:
    """The smallest combination no narrower than `lower` in any width, by sum of bits (module docstring);
    None where none passes within `limit` measured combinations."""
    top = widths[-1]
    budget = limit
    for total in range(lower.node + lower.weight + lower.lut, 3 * top + 1):
        level = [Precision(n, w, total - n - w) for n in range(lower.node, top + 1)
                 for w in range(lower.weight, top + 1) if lower.lut <= total - n - w <= top]
        level = sorted((p for p in level if possible(p)), key=lambda p: (p.lut, p.weight, p.node))
        if len(level) > budget:
            return None
        budget -= len(level)
        pick = next((p for p in level if passes(p)), None)  # in the order of the tie-break
        if pick is not None:
            return pick
    return None
