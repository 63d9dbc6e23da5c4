"""Units of work (pure): how a run knows what is done.

A run is a set of units (the labeled set, the box refiner, each round's label / merge /
review / train steps, the round itself, final/). Each unit ends by writing one marker,
`<folder>/_COMMITTED` or `<folder>/_COMMITTED.<step>`, as its last write; the marker records
the unit's *key*: the settings it was produced with (`settings`, dotted names as in the
config) and its other inputs (`inputs`: a teacher's identity, a round's threshold). A unit
whose marker exists with the same key is done and is read back, never redone; one without a
marker is (re)done from scratch; one whose marker records another key is refused, naming
the first difference, unless the caller chose to redo it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MARKER = "_COMMITTED"


@dataclass(frozen=True)
class Unit:
    folder: str  # under the run directory, e.g. "rounds/r001"
    step: str = ""  # "" for the folder's own unit ("rounds/r001/_COMMITTED"), else e.g. "label"
    settings: dict[str, Any] = field(default_factory=dict)  # dotted setting -> value it was produced with
    inputs: dict[str, Any] = field(default_factory=dict)  # anything else it was produced from

    @property
    def marker(self) -> str:
        return f"{self.folder}/{MARKER}.{self.step}" if self.step else f"{self.folder}/{MARKER}"

    @property
    def name(self) -> str:
        return f"{self.folder} ({self.step})" if self.step else self.folder

    def record(self, result: Any, committed_at: str) -> str:
        """The marker's text: the key, the unit's result (what a resumed run reads back)."""
        body = {
            "unit": self.marker,
            "settings": self.settings,
            "inputs": self.inputs,
            "result": result,
            "committed_at": committed_at,
        }
        return json.dumps(body, indent=1, sort_keys=True, default=str) + "\n"


def pick(settings: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The settings named in `prefixes`: a section ('train.') or one setting ('seed')."""
    return {k: v for k, v in settings.items() if any(k == p or p.endswith(".") and k.startswith(p) for p in prefixes)}


def omit(settings: dict[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The settings not named in `prefixes` (as `pick` names them)."""
    named = pick(settings, prefixes)
    return {k: v for k, v in settings.items() if k not in named}


def difference(recorded: dict, wanted: Unit) -> str | None:
    """The first way a marker's record differs from `wanted`'s key, for a person; None when
    they are the same."""
    if "settings" not in recorded:
        return "its marker was written by an earlier ssl_ray, which recorded no key"
    for part, now in (("settings", wanted.settings), ("inputs", wanted.inputs)):
        then = recorded.get(part) or {}
        for key in sorted(then.keys() | now.keys()):
            if json.dumps(then.get(key), sort_keys=True) != json.dumps(now.get(key), sort_keys=True, default=str):
                return f"{key}: {then.get(key)!r} -> {now.get(key)!r}"
    return None


def setting_difference(recorded: dict, settings: dict[str, Any]) -> str | None:
    """The first setting a marker was produced with that `settings` (a config's
    `result_settings`) would change; None when none does. Inputs are not compared: they
    follow from the settings and from other units."""
    if "settings" not in recorded:
        return "its marker was written by an earlier ssl_ray, which recorded no key"
    for key, then in sorted(recorded["settings"].items()):
        now = settings.get(key, "(no such setting)")
        if json.dumps(then, sort_keys=True) != json.dumps(now, sort_keys=True):
            return f"{key}: {then!r} -> {now!r}"
    return None


# What each stage's output depends on, as setting prefixes (`pick`). A round's own units
# depend on every setting before them, so the driver keys them by all result settings but
# the control's (`ROUND_OMITS`): a control can be added to a finished run.
STEP_SETTINGS = {
    "ingest": ("labeled.", "pool.max_pixels"),
    "refiner": ("labeled.", "pool.max_pixels", "model.imgsz", "refine.", "seed"),
    "label": ("labeled.", "pool.", "model.imgsz", "label.", "select.", "refine.", "seed"),
    "train": ("labeled.", "pool.max_pixels", "model.", "train.", "seed"),
}
ROUND_OMITS = ("rounds.control",)
