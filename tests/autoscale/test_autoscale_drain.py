"""Deletion costs: a scale-down should remove the engines with the fewest requests in flight."""

from __future__ import annotations

from tandem.autoscale.drain import (
    DELETION_COST_ANNOTATION,
    UNKNOWN_LOAD_COST,
    annotation_patches,
    deletion_costs,
    victims,
)
from tandem.autoscale.observation import PodSample


def test_cost_is_requests_in_flight_and_unknown_pods_are_kept() -> None:
    samples = [
        PodSample("d-0", waiting=2, running=30),
        PodSample("d-1", 0, 0.4),
        PodSample("d-2", 0, 7),
    ]
    costs = deletion_costs(["d-0", "d-1", "d-2", "d-9"], samples)
    assert costs == {"d-0": 32, "d-1": 1, "d-2": 7, "d-9": UNKNOWN_LOAD_COST}


def test_victims_are_the_idlest_pods() -> None:
    costs = {"d-0": 32, "d-1": 0, "d-2": 7, "d-3": 0, "d-9": UNKNOWN_LOAD_COST}
    assert victims(costs, 3) == ["d-1", "d-3", "d-2"]
    assert victims(costs, 0) == []


def test_samples_of_pods_no_longer_listed_are_ignored() -> None:
    assert deletion_costs(["d-0"], [PodSample("gone", 0, 50), PodSample("d-0", 1, 1)]) == {"d-0": 2}


def test_annotation_values_are_strings() -> None:
    assert annotation_patches({"d-0": 3}) == {"d-0": {DELETION_COST_ANNOTATION: "3"}}
