"""What the four learned enhancers share: weights-file reading (one-line errors), the image <->
tensor round trip, the training batches, loss check and progress log, and their training commands' options."""

import argparse
import os
import re

import numpy as np
import pytest
import torch

from wnlb_d2.enhance.agllnet import AGLLNet, AGLLNetWeightsError, load_agllnet_weights
from wnlb_d2.enhance.base import bgr_to_rgb_tensor, run_rgb_network
from wnlb_d2.enhance.enlightengan import EnlightenGANWeightsError, UnetResizeConv, load_enlightengan_weights
from wnlb_d2.enhance.retinexformer import RetinexFormer, RetinexFormerWeightsError, load_retinexformer_weights
from wnlb_d2.cli.enhancer_training import (add_common_arguments, check_common_arguments, check_size_and_crop,
                                          error_reporter, image_files)
from wnlb_d2.enhance.training_steps import TrainingProgress, check_finite, random_batch
from wnlb_d2.enhance.weights_io import save_torch_file, state_dict_of_tensors
from wnlb_d2.enhance.zero_dce import ZeroDCEPP, ZeroDCEWeightsError, load_zero_dce_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: torch on one thread

LOADERS = [
    ("Zero-DCE++", ZeroDCEWeightsError, lambda p: load_zero_dce_weights(ZeroDCEPP(), p)),
    ("RetinexFormer", RetinexFormerWeightsError, lambda p: load_retinexformer_weights(RetinexFormer(n_feat=8), p)),
    ("AGLLNet", AGLLNetWeightsError, lambda p: load_agllnet_weights(AGLLNet(att_widths=(4, 6, 8)), p)),
    ("EnlightenGAN", EnlightenGANWeightsError, lambda p: load_enlightengan_weights(UnetResizeConv(channels=4), p)),
]


@pytest.mark.parametrize("what, error, load", LOADERS, ids=[w for w, _, _ in LOADERS])
def test_unreadable_and_missing_weights_are_refused_in_one_line_naming_the_file(tmp_path, what, error, load):
    # torch.load's weights-only error runs over several lines; Zero-DCE++ passed it on whole.
    text = str(tmp_path / "notes.pth")
    with open(text, "w") as f:
        f.write("not a checkpoint\n")
    with pytest.raises(error, match=f"^Cannot read {re.escape(what)} weights ") as e:
        load(text)
    assert repr(text) in str(e.value) and "\n" not in str(e.value), str(e.value)
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(error, match=f"^{re.escape(what)} weights file not found: ") as e:
        load(missing)
    assert repr(missing) in str(e.value) and "\n" not in str(e.value)


def test_state_dicts_are_unwrapped_as_each_format_allows():
    w = torch.zeros(2)
    assert state_dict_of_tensors({"model": {"module.a": w}}, "f.pth", "X", ValueError) == {"a": w}
    assert state_dict_of_tensors({"state_dict": {"a": w}, "epoch": 3}, "f.pth", "X", ValueError) == {"a": w}
    with pytest.raises(ValueError, match=r"^X weights 'f.pth': got a dict that is not a state dict of tensors; "
                                         r"expected Y$"):
        state_dict_of_tensors({"model": {"a": w}}, "f.pth", "X", ValueError, "expected Y", wrappers=())
    with pytest.raises(ValueError, match="got a dict that is not"):
        state_dict_of_tensors({}, "f.pth", "X", ValueError)
    assert state_dict_of_tensors({}, "f.pth", "X", ValueError, allow_empty=True) == {}
    # Only a prefix on every key is DataParallel's.
    assert set(state_dict_of_tensors({"module.a": w, "b": w}, "f.pth", "X", ValueError)) == {"module.a", "b"}


def test_saved_weights_are_written_atomically_into_a_new_folder(tmp_path):
    path = str(tmp_path / "new" / "w.pth")
    assert save_torch_file({"a": torch.ones(3)}, path) == path
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert os.listdir(tmp_path / "new") == ["w.pth"]  # no temporary left behind


def test_network_round_trip_rounds_or_truncates():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0], bgr[..., 2] = 128, 7  # blue, red
    x = bgr_to_rgb_tensor(bgr)
    assert x.shape == (1, 3, 2, 3) and x.dtype == torch.float32
    assert torch.allclose(x[0, 0], torch.full((2, 3), 7 / 255)) and torch.allclose(x[0, 2], torch.full((2, 3), 128 / 255))
    assert np.array_equal(run_rgb_network(bgr, lambda t: t), bgr)
    # 128 * 0.999 = 127.87: 128 rounded, 127 truncated; out-of-range values are clipped.
    assert run_rgb_network(bgr, lambda t: t * 0.999)[0, 0, 0] == 128
    assert run_rgb_network(bgr, lambda t: t * 0.999, truncate=True)[0, 0, 0] == 127
    assert run_rgb_network(bgr, lambda t: t * 100 - 1)[0, 0].tolist() == [255, 0, 255]


def _old_inline_draw(dark, clean, batch_size, crop, gen):
    """The draw the training loops of Zero-DCE++ and AGLLNet wrote inline before random_batch."""
    idx = torch.randint(len(dark), (batch_size,), generator=gen)
    lo, hi = dark[idx], clean[idx]
    ys = torch.randint(dark.shape[-2] - crop + 1, (batch_size,), generator=gen).tolist()
    xs = torch.randint(dark.shape[-1] - crop + 1, (batch_size,), generator=gen).tolist()
    lo = torch.stack([b[:, y:y + crop, x:x + crop] for b, y, x in zip(lo, ys, xs)])
    hi = torch.stack([b[:, y:y + crop, x:x + crop] for b, y, x in zip(hi, ys, xs)])
    flips = (torch.rand(batch_size, generator=gen) < 0.5)[:, None, None, None]
    return torch.where(flips, lo.flip(-1), lo), torch.where(flips, hi.flip(-1), hi)


def test_random_batches_are_the_loops_former_draws_and_keep_pairs_aligned():
    dark = torch.rand(5, 3, 12, 10, generator=torch.Generator().manual_seed(1))
    clean = dark * 2
    gen_old, gen_new = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(3):  # the same seed: the same batches, step after step
        old = _old_inline_draw(dark, clean, 4, 6, gen_old)
        new = random_batch([dark, clean], 4, 6, gen_new, flip=True)
        assert all(torch.equal(a, b) for a, b in zip(old, new))
    lo, hi = new
    assert lo.shape == (4, 3, 6, 6) and torch.equal(hi, lo * 2)  # the same windows and flips in both
    (whole,) = random_batch([dark], 2, 0, torch.Generator().manual_seed(0))
    assert whole.shape == (2, 3, 12, 10)


def test_a_non_finite_loss_stops_training_with_its_step():
    check_finite("X loss", 0, torch.tensor(1.0), torch.tensor(2.0))
    with pytest.raises(FloatingPointError, match=r"^X loss became nan at step 3; lower --lr$"):
        check_finite("X loss", 3, torch.tensor(float("nan")))
    with pytest.raises(FloatingPointError, match=r"^D loss became 1.0, inf at step 0; lower --lr$"):
        check_finite("D loss", 0, torch.tensor(1.0), torch.tensor(float("inf")))


def test_training_progress_records_every_step_and_logs_each_period_and_the_last(caplog):
    import logging

    log = logging.getLogger("wnlb_d2.test_progress")
    steps = TrainingProgress("Net", 5, log_period=2, progress=False, logger=log)
    with caplog.at_level(logging.INFO, logger=log.name):
        for it in steps:
            values = steps.record(it, {"total": torch.tensor(float(it), requires_grad=True) * 2, "l1": 0.5},
                                  log_suffix=", lr 1e-3")
            assert values == {"total": 2.0 * it, "l1": 0.5}
    assert [h["total"] for h in steps.history] == [0.0, 2.0, 4.0, 6.0, 8.0]
    lines = [r.getMessage() for r in caplog.records if r.name == log.name]
    assert lines == ["Net step 2/5: total 2.0000, l1 0.5000, lr 1e-3", "Net step 4/5: total 6.0000, l1 0.5000, lr 1e-3",
                     "Net step 5/5: total 8.0000, l1 0.5000, lr 1e-3"]


def test_size_and_crop_are_checked_against_the_networks_multiple_and_minimum():
    assert check_size_and_crop(128, 64, 4, 8) is None
    assert check_size_and_crop(128, 0, 4, 8) is None
    assert check_size_and_crop(6, 0, 4, 8) == "--size must be >= 8 for this network, got 6"
    assert check_size_and_crop(128, 18, 4, 8) == ("--crop must be 0 or a multiple of 4 (the network's input "
                                                  "multiple) in [8, --size 128], got 18")
    assert check_size_and_crop(64, 128, 64, 64).startswith("--crop must be 0 or a multiple of 64 ")  # above --size
    assert check_size_and_crop(128, 4, 4, 8).startswith("--crop must be 0 ")  # below the minimum
    assert check_size_and_crop(130, 0, 4, 8) == ("--crop 0 trains on whole images, so --size must be a multiple "
                                                 "of 4, got 130")


def test_common_training_options_take_each_commands_defaults_and_help(capsys):
    p = argparse.ArgumentParser(prog="train_x.py")
    add_common_arguments(p, {"iters": 200, "batch_size": 4, "lr": 3e-4}, low_light_required=True,
                         help={"batch_size": "pairs per step (default 4)"})
    args = p.parse_args(["--dataset", "d", "--low-light", "lv2021", "--output", "o.pth"])
    assert (args.size, args.crop, args.max_images, args.iters, args.batch_size, args.lr, args.seed) == \
        (128, 64, 0, 200, 4, 3e-4, 0)
    text = p.format_help()
    assert "optimisation steps (default 200)" in text and "pairs per step (default 4)" in text
    assert "dark image of each pair" in text
    with pytest.raises(SystemExit):
        p.parse_args(["--dataset", "d", "--output", "o.pth"])  # --low-light is required here
    assert "--low-light" in capsys.readouterr().err
    assert check_common_arguments(args) is None
    args.max_images = -1
    assert check_common_arguments(args) == "--iters and --batch-size must be >= 1, --max-images >= 0, --lr > 0"
    assert error_reporter("train_x.py")("bad") == 1
    assert capsys.readouterr().err == "train_x.py: error: bad\n"


def test_training_image_files_name_the_set_that_has_none(tmp_path):
    for name in ("b.png", "a.png", "c.png"):
        (tmp_path / name).write_bytes(b"")
    assert [os.path.basename(f) for f in image_files([str(tmp_path)], None, max_images=2)] == ["a.png", "b.png"]
    with pytest.raises(ValueError, match="^no normal-light training images found$"):
        image_files([str(tmp_path / "nothing")], None, "normal-light")
    with pytest.raises(ValueError, match="^no training images found$"):
        image_files([str(tmp_path / "nothing")], None)
    with pytest.raises(ValueError, match="^low-light dataset 'no_such_set' is not registered: "):
        image_files(None, "no_such_set", "low-light")
