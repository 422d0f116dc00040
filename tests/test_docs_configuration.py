"""docs/configuration.md cannot fall behind the code: every key that wnlb_d2's config functions add
(wnlb_d2/config.py and wnlb_d2/modeling/meta_arch/config.py) is listed with its default, and
nothing listed is a key that no longer exists."""

import json
import os
import re

from detectron2.config import get_cfg

from wnlb_d2.config import add_lowlight_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "configuration.md")
# A key row of the page's tables: | `KEY` | `DEFAULT` | meaning |
ROW = re.compile(r"^\|\s*`(?P<key>[A-Z][A-Z0-9_.]+)`\s*\|\s*`(?P<default>[^`]*)`\s*\|(?P<meaning>.*)\|\s*$")


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def documented_default(value):
    """A default as the page writes it: strings in double quotes, tuples in (), lists in []."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(documented_default(v) for v in value) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(documented_default(v) for v in value) + "]"
    return repr(value)


def added_keys():
    """{full key: default} of every key add_lowlight_config adds to detectron2's config."""
    stock = _flat(get_cfg())
    cfg = get_cfg()
    add_lowlight_config(cfg)
    return {k: v for k, v in _flat(cfg).items() if k not in stock}


def documented_rows():
    with open(PAGE) as f:
        return {m["key"]: (m["default"], m["meaning"].strip()) for m in map(ROW.match, f.read().split("\n")) if m}


def test_every_config_key_is_documented_with_its_default():
    keys, rows = added_keys(), documented_rows()
    # The nodes the functions add (a sanity check on the diff itself).
    for node in ("MODEL.WNLB.", "MODEL.SOLOV2.", "INPUT.LOW_LIGHT.", "INPUT.ENHANCER.", "SOLVER."):
        assert any(k.startswith(node) for k in keys), node
    missing = sorted(set(keys) - set(rows))
    assert missing == [], f"docs/configuration.md lacks {missing}"
    wrong = {k: (rows[k][0], documented_default(v)) for k, v in keys.items() if rows[k][0] != documented_default(v)}
    assert wrong == {}, f"documented default vs code default: {wrong}"
    assert all(meaning for _, meaning in rows.values())


def test_no_documented_key_is_stale():
    keys = added_keys()
    stale = sorted(set(documented_rows()) - set(keys))
    assert stale == [], f"docs/configuration.md lists keys the config functions no longer add: {stale}"


def test_documented_default_formats():
    assert documented_default("embedded") == '"embedded"'
    assert documented_default((0.9, 1.0)) == "(0.9, 1.0)"
    assert documented_default([[1, 96], [48, 192]]) == "[[1, 96], [48, 192]]"
    assert documented_default(False) == "False" and documented_default(1e-4) == "0.0001"
