import pytest

from adprune_core.config import DeltaSpec, PruneSpec, RhoSpec
from adprune_core.schedule import (
    classify_profile,
    decide,
    least_squares_slope,
    next_widths,
    rho_reached,
)

RHO = RhoSpec(threshold=0.001, patience=2, min_epochs=3, max_epochs=10)


def test_rho_needs_patience_consecutive_small_changes():
    assert rho_reached([0.5, 0.45, 0.4495, 0.44], RHO) is None  # only one small change
    assert rho_reached([0.5, 0.45, 0.4495, 0.4491], RHO) == "saturated"
    assert rho_reached([0.5, 0.4995, 0.4991, 0.45], RHO) is None  # small changes not the latest


def test_rho_threshold_is_strict_and_absolute():
    rho = RhoSpec(threshold=0.01, patience=1, min_epochs=1, max_epochs=50)
    assert rho_reached([0.5, 0.51], rho) is None  # |delta| == threshold is not below it
    assert rho_reached([0.5, 0.505], rho) == "saturated"
    assert rho_reached([0.5, 0.495], rho) == "saturated"  # decreases count by magnitude


def test_rho_respects_min_and_max_epochs():
    flat = [0.4] * 3
    assert rho_reached(flat, RhoSpec(0.001, 2, 3, 10)) == "saturated"
    assert rho_reached(flat, RhoSpec(0.001, 2, 4, 10)) is None
    noisy = [0.4 + 0.1 * (i % 2) for i in range(10)]
    assert rho_reached(noisy[:9], RHO) is None
    assert rho_reached(noisy, RHO) == "max_epochs"


def test_slope_is_least_squares():
    assert least_squares_slope([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert least_squares_slope([0.0, 1.0, 0.0, 1.0]) == pytest.approx(0.2)
    assert least_squares_slope([0.7]) == 0.0


@pytest.mark.parametrize(
    ("curve", "band", "profile"),
    [
        ([0.5, 0.45, 0.42, 0.41], 0.001, "decreasing"),
        ([0.30, 0.31, 0.33, 0.36], 0.001, "increasing"),
        ([0.40, 0.401, 0.399, 0.4005], 0.001, "flat"),
        ([0.40, 0.42, 0.44], 0.02, "flat"),  # slope exactly at the band counts as flat
        ([0.40, 0.42, 0.44], 0.019, "increasing"),
    ],
)
def test_profile_classification(curve, band, profile):
    assert classify_profile(curve, band) == profile


def test_width_rule_rounds_half_up_and_clamps():
    assert next_widths([64, 64, 10, 7], [0.5, 0.2578125, 0.05, 0.999], min_width=2) == [
        32,  # 32.0
        17,  # 16.5 rounds up
        2,  # 0.5 -> 1, clamped up to min_width
        7,  # 6.993 -> 7, never above the current width
    ]
    assert next_widths([4], [1.0], min_width=8) == [4]  # min_width never grows a layer
    with pytest.raises(ValueError):
        next_widths([4, 4], [0.5], min_width=1)


def prune(**kw) -> PruneSpec:
    return PruneSpec(rho=RhoSpec(0.001, 1, 2, 6), delta=DeltaSpec(0.001), min_width=1, **kw)


SATURATED_DOWN = [0.5, 0.40, 0.35, 0.3495]
SATURATED_UP = [0.30, 0.35, 0.40, 0.4005]


def test_decide_continues_until_rho():
    d = decide("search", 0, [10, 10], [0.5, 0.4], [0.4, 0.4], prune(), 0)
    assert d.action == "continue"


def test_decide_next_round_uses_layer_densities():
    d = decide("search", 0, [10, 20], SATURATED_DOWN, [0.35, 0.5], prune(), 0)
    assert d.action == "next_round"
    assert d.next_widths == [4, 10]
    assert d.profile == "decreasing" and d.rho == "saturated"


def test_decide_increasing_stops_and_keeps_previous_round():
    d = decide("search", 2, [10, 20], SATURATED_UP, [0.4, 0.4], prune(), 0)
    assert (d.action, d.reason, d.chosen_round) == ("stop", "increasing", 1)
    d = decide("search", 0, [10, 20], SATURATED_UP, [0.4, 0.4], prune(), 0)
    assert d.chosen_round == 0  # net0 is all there is


def test_decide_goes_to_final_phase_when_configured():
    d = decide("search", 2, [10, 20], SATURATED_UP, [0.4, 0.4], prune(), final_epochs=5)
    assert (d.action, d.chosen_round) == ("final", 1)
    assert decide("final", 1, [8, 9], [0.4] * 4, [0.4, 0.4], prune(), 5).action == "continue"
    assert decide("final", 1, [8, 9], [0.4] * 5, [0.4, 0.4], prune(), 5).action == "stop"


def test_decide_stops_at_max_rounds():
    d = decide("search", 2, [10, 20], SATURATED_DOWN, [0.5, 0.5], prune(max_rounds=3), 0)
    assert (d.action, d.reason, d.chosen_round) == ("stop", "max_rounds", 2)


def test_decide_stops_when_no_width_changes():
    d = decide("search", 1, [2, 2], SATURATED_DOWN, [0.9, 0.9], prune(), 0)
    assert (d.action, d.reason, d.chosen_round) == ("stop", "no_width_change", 1)


def test_decide_max_epochs_also_ends_a_round():
    curve = [0.5, 0.45, 0.40, 0.35, 0.30, 0.25]
    d = decide("search", 0, [10], curve, [0.5], prune(), 0)
    assert (d.action, d.rho, d.next_widths) == ("next_round", "max_epochs", [5])
