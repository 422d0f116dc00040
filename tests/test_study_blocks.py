"""tools/study_blocks.py: recipes, their starting point, bad input (training itself: tests/test_experiment.py)."""

import os
import sys

import pytest
from helpers import load_script

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _tool():
    sys.path.insert(0, TOOLS)
    return load_script("tools/study_blocks.py")


def test_recipes_start_from_factor_one_and_change_one_thing(capsys):
    tool = _tool()
    args = tool.build_parser().parse_args(["--weights", "w.pth", "--seeds", "0", "1"])
    base = tool._spec_values("adamw", args)
    assert base["wnlb_weight_lr_factor"] == 1.0 and base["wnlb_lr_factor"] == 1.0
    assert base["weights"] == "w.pth" and base["seeds"] == [0, 1] and base["severities"] == []
    w100 = tool._spec_values("adamw-wlr100", args)
    assert {k for k in w100 if w100[k] != base[k]} == {"wnlb_weight_lr_factor", "preset"}
    sgd = tool._spec_values("sgd", args)
    assert sgd["finetune_optimizer"] == "SGD" and sgd["finetune_lr"] == 5e-4
    assert tool.main(["--list"]) == 0
    assert "adamw-wlr100" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--weights", "w.pth", "--recipes", "nope"], "unknown recipe(s) ['nope']"),
    (["--recipes", "adamw"], "give --weights"),
    (["--weights", "w.pth", "--seeds", "0", "0"], "repeat a seed"),
])
def test_bad_input_is_one_line(argv, message):
    with pytest.raises(SystemExit) as e:
        _tool().main(argv)
    assert message in str(e.value.code) and "\n" not in str(e.value.code)


def test_mechanism_recipes_change_what_they_say():
    tool = _tool()
    args = tool.build_parser().parse_args(["--weights", "w.pth"])
    assert args.recipes == tool.DEFAULT_RECIPES and args.feature_images == 50
    base = tool._spec_values("adamw-wlr100", args)
    path10 = tool._spec_values("adamw-path10-wlr100", args)
    assert path10["wnlb_lr_factor"] * path10["wnlb_weight_lr_factor"] == 100.0  # w keeps the demo's x100
    assert tool._spec_values("adamw-path100-wlr100", args)["wnlb_lr_factor"] == 100.0
    table3 = tool._spec_values("adamw-wlr100-tableIII-w", args)
    assert table3["block_opts"] == ["MODEL.WNLB.WEIGHT_INIT", "[0.0, 0.0, 0.5, 0.0]"]
    authors = tool._spec_values("adamw-wlr100-authors-init", args)
    assert {k for k in authors if authors[k] != base.get(k)} == {"block_opts", "preset"}
    assert tool._spec_values("adamw-long-wlr100", args)["finetune_iters"] == 4 * base["finetune_iters"]


def _run(row, seed, ap, share, nfe_before, nfe_after=None):
    nfe = {"res3": [nfe_before, nfe_before + 0.02]}
    if nfe_after is not None:
        nfe["res3.after"] = [nfe_after, nfe_after + 0.02]
    return {"row": row, "seed": seed, "w": {"res3": 0.1 * (seed + 1)} if row == "wnlb" else {},
            "segm": {"AP": ap}, "bbox": {"AP": ap + 1},
            "feature_errors": {"nfe": nfe, "nonlocal_share": {"res3": [share, share]} if row == "wnlb" else {}}}


def test_recipe_entry_and_table_from_runs():
    tool = _tool()
    wnlb = [_run("wnlb", s, 20 + s, 0.1 * s, 0.8, 0.7 - 0.01 * s) for s in (0, 1, 2)]
    ref = {s: _run("finetuned", s, 19 + s, 0, 0.8 + 0.01 * s) for s in (0, 1, 2)}
    e = tool.recipe_entry("adamw-wlr100", wnlb, ref)
    assert e["share"]["res3"]["mean"] == pytest.approx(0.1) and e["share"]["res3"]["n"] == 3
    d = e["nfe"]["res3"]["wnlb-vs-finetuned"]  # wnlb's res3 after its block against finetuned's res3
    assert d["mean_diff"] == pytest.approx(sum((0.71 - 0.01 * s) - (0.81 + 0.01 * s) for s in (0, 1, 2)) / 3)
    assert e["segm"]["wnlb-vs-finetuned"]["mean_diff"] == pytest.approx(1.0)
    md = tool.markdown({"adamw-wlr100": e})
    assert "| adamw-wlr100 | res3 | 0.1000 ± 0.1000 |" in md and "-0.120 [" in md
