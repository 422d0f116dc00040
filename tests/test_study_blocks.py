"""tools/study_blocks.py: recipes, their starting point, bad input (training itself: tests/test_experiment.py)."""

import importlib.util
import os
import sys

import pytest

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def _tool():
    sys.path.insert(0, TOOLS)
    spec = importlib.util.spec_from_file_location("study_blocks_tool", os.path.join(TOOLS, "study_blocks.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
