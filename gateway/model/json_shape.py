"""The structure of DICOM JSON (PS3.18 F.2) as an upstream sends it, checked cheaply.

Results from an origin server are checked before they reach a modality: 8-hex keys,
attribute objects with a string VR, ``Value`` as an array, sequence items as objects, and
nesting bounded. Values themselves are checked later by the front that sends them on.
The checks return the first problem found as a message, or None, and build nothing else:
they run for every attribute of every result on the path to the modality's first response.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.model.dicom_json import STANDARD_KEYS, is_tag_key

MAX_SEQUENCE_DEPTH = 16
NOT_AN_OBJECT = "a dataset is not a JSON object"
TOO_DEEP = "sequences nested too deeply"
BAD_KEY = "a key is not 8 upper-case hex digits"


ShapePlan = Mapping[str, "ShapePlan | None"]
"""The keys to check at one level; for each, the plan of its sequence items (None: all)."""


def shape_problem(item: Any, plan: ShapePlan | None = None, depth: int = 0) -> str | None:
    """What is wrong with the shape of the dataset ``item``; None when nothing is.

    Without a ``plan`` every attribute is checked at every level; with one, only the
    planned keys (an absent one is fine), and their sequence items as their entry says.
    ``depth`` is how deep in sequences ``item`` sits. Without a plan the keys of standard
    attributes are checked in one set operation; only other keys meet the 8-hex pattern.
    """
    if type(item) is not dict:
        return NOT_AN_OBJECT
    if depth > MAX_SEQUENCE_DEPTH:
        return TOO_DEEP
    keys_known = plan is not None or STANDARD_KEYS.issuperset(item)
    for key in item if plan is None else plan:
        if not keys_known and not is_tag_key(key):
            return BAD_KEY
        attr: Any = item.get(key)
        if attr is None and plan is not None and key not in item:
            continue  # not sent: the projection fills it in zero-length
        vr = attr.get("vr") if type(attr) is dict else None
        if type(vr) is not str:
            return f"attribute {key} has no VR"
        values = attr.get("Value")
        if values is None:
            continue
        if type(values) is not list:
            return f"attribute {key}: Value is not an array"
        items = None if plan is None else plan[key]
        if vr == "SQ" or items is not None:  # planned items are projected, whatever the VR
            for value in values:
                if (problem := shape_problem(value, items, depth + 1)) is not None:
                    return problem
    return None
