"""The precision scan's search (`fpga/width_search.py`) on made-up networks whose needs are known: the criterion
at its limits, the smallest width of an axis, the joint search's order and its pick."""
from __future__ import annotations

from neuro_trigger.fpga import width_search
from neuro_trigger.fpga.fixed_point import Precision
from neuro_trigger.fpga.width_search import Outcome, scan, smallest_on_axis, within


def test_within_is_resolution_at_most_1_01_times_and_efficiency_at_most_one_point_below() -> None:
    reference = Outcome(z_std_cm=10.0, efficiency=0.5)
    assert within(Outcome(10.1, 0.49), reference)  # both limits themselves pass
    assert not within(Outcome(10.1001, 0.9), reference)
    assert not within(Outcome(9.0, 0.4899), reference)
    assert within(Outcome(9.0, 0.99), reference)  # better than float on both
    assert within(Outcome(10.0, float("nan")), Outcome(10.0, float("nan")))  # no IP tracks: resolution only


def test_the_smallest_width_of_an_axis_is_where_every_wider_one_passes() -> None:
    assert smallest_on_axis({1: False, 2: True, 3: False, 4: True, 5: True}) == 4
    assert smallest_on_axis({1: True, 2: True}) == 1
    assert smallest_on_axis({1: True, 2: False}) is None


def test_scan_finds_the_needs_of_a_network_that_has_them() -> None:
    """A network whose resolution grows by 1% for each bit it lacks of node 7, weight 5, table 4 (and gets
    worse still for sums of bits below 18): alone each axis's minimum is its need; together the first
    combination above those with a sum of at least 18, the one with the smallest table."""
    needs = {"node": 7, "weight": 5, "lut": 4}

    def measure(p: Precision) -> Outcome:
        lacking = sum(max(0, needs[a] - getattr(p, a)) for a in needs) + max(0, 18 - p.node - p.weight - p.lut)
        return Outcome(z_std_cm=10.0 * (1 + 0.011 * lacking), efficiency=0.9)

    calls: list[Precision] = []
    found = scan(lambda p: calls.append(p) or measure(p), Outcome(10.0, 0.9))
    assert found.smallest == needs
    assert found.joint == Precision(node=9, weight=5, lut=4)  # sum 18: (7,7,4), (8,6,4), (9,5,4) ...; lut, weight
    assert len(calls) == len(set(calls)) == len(found.measured)  # each point measured once
    assert [len(found.scans[a]) for a in width_search.AXES] == [16, 16, 16]
    joint_sums = [p.node + p.weight + p.lut for p in found.scans["joint"]]
    assert joint_sums == sorted(joint_sums) and joint_sums[0] == 16 and joint_sums[-1] == 18
    for p in found.scans["joint"]:  # the search stays at or above each axis's minimum
        assert all(getattr(p, a) >= needs[a] for a in needs)
    assert found.measured[Precision(7, 5, 4)].z_std_cm > 10.1


def test_scan_gives_no_joint_pick_where_an_axis_never_passes() -> None:
    found = scan(lambda p: Outcome(10.0 + (p.weight < 20), 0.9), Outcome(10.0, 0.9))
    assert found.smallest["weight"] is None and found.joint is None and found.scans["joint"] == []
