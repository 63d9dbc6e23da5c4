"""Units of work (`core.units`): the key a marker records, and how a differing key is named."""

import json

import pytest

from ssl_ray.core.units import Unit, difference, pick, setting_difference


def record(unit: Unit) -> dict:
    return json.loads(unit.record({"n": 1}, "2026-12-02T00:00:00Z"))


@pytest.mark.parametrize(
    "folder, step, marker, name",
    [
        ("labeled", "", "labeled/_COMMITTED", "labeled"),
        ("rounds/r001", "label", "rounds/r001/_COMMITTED.label", "rounds/r001 (label)"),
    ],
)
def test_marker_and_name(folder, step, marker, name):
    assert (Unit(folder, step).marker, Unit(folder, step).name) == (marker, name)


SETTINGS = {"select.conf": 0.5, "select.per_class": {"car": 0.7}, "train.epochs": 30, "seed": 0, "seeds": 3}


@pytest.mark.parametrize(
    "prefixes, expected",
    [
        (("select.",), {"select.conf": 0.5, "select.per_class": {"car": 0.7}}),
        (("seed",), {"seed": 0}),  # a name is itself or a section: "seed" is not "seeds"
        (("train.", "seed"), {"train.epochs": 30, "seed": 0}),
        ((), {}),
    ],
)
def test_pick(prefixes, expected):
    assert pick(SETTINGS, prefixes) == expected


BASE = Unit("rounds/r001", "label", settings={"select.conf": 0.5, "seed": 0}, inputs={"teacher": "w.pt#ab"})


@pytest.mark.parametrize(
    "wanted, expected",
    [
        (BASE, None),
        (
            Unit("rounds/r001", "label", settings={"select.conf": 0.7, "seed": 0}, inputs=BASE.inputs),
            "select.conf: 0.5 -> 0.7",
        ),
        (
            Unit("rounds/r001", "label", settings=BASE.settings, inputs={"teacher": "w.pt#cd"}),
            "teacher: 'w.pt#ab' -> 'w.pt#cd'",
        ),
        (
            Unit("rounds/r001", "label", settings={**BASE.settings, "select.max_boxes": 10}, inputs=BASE.inputs),
            "select.max_boxes: None -> 10",
        ),  # a setting the marker did not record
    ],
)
def test_difference_names_the_first_one(wanted, expected):
    assert difference(record(BASE), wanted) == expected


def test_a_marker_without_a_key_is_never_taken_for_done():
    assert "recorded no key" in difference({"committed_at": "x"}, BASE)
    assert "recorded no key" in setting_difference({"committed_at": "x"}, {})


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"select.conf": 0.5, "seed": 0, "train.epochs": 3}, None),  # settings the unit does not depend on may change
        ({"select.conf": 0.6, "seed": 0}, "select.conf: 0.5 -> 0.6"),
        ({"select.conf": 0.5}, "seed: 0 -> '(no such setting)'"),  # a setting removed since
    ],
)
def test_setting_difference_compares_only_what_the_unit_recorded(settings, expected):
    assert setting_difference(record(BASE), settings) == expected
