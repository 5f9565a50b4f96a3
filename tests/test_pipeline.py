"""Standalone text-to-image (f1core.pipeline) and the evaluator's `model` command on a random tiny checkpoint."""
import json

import pytest
import torch

from f1core.eval.__main__ import main as eval_main
from f1core.make_tiny import make_tiny
from f1core.pipeline import F1Pipeline, upscale_for_detector


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("pipe") / "tiny.safetensors", seed=2)


def test_images_are_seeded_per_prompt_whatever_the_batch(tiny_path):
    pipe = F1Pipeline.from_file(tiny_path)
    alone = pipe(["a red circle"], width=64, height=64, steps=3, seed=7)
    batch = pipe(["a blue square", "a red circle"], width=64, height=64, steps=3, seed=6)
    assert alone.shape == (1, 3, 64, 64) and 0 <= alone.min() and alone.max() <= 1
    torch.testing.assert_close(batch[1], alone[0])   # prompt 1 of the batch uses seed 6 + 1
    assert not torch.allclose(batch[0], batch[1])


def test_bad_arguments_are_named(tiny_path):
    pipe = F1Pipeline.from_file(tiny_path)
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe(["a star"], width=72, height=64)
    with pytest.raises(ValueError, match="sampler"):
        pipe(["a star"], sampler="nope")


def test_upscale_for_detector_only_enlarges_small_images():
    small, large = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 256, 256)
    assert upscale_for_detector(small).shape[-1] == 128
    assert upscale_for_detector(large) is large


def test_eval_model_command_writes_a_report(tiny_path, tmp_path, capsys):
    assert eval_main(["model", str(tiny_path), "--limit", "3", "--steps", "2", "--no-progress",
                      "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "vae psnr (dB)" in printed and printed.strip().splitlines()[-1].startswith("overall: ")
    assert (tmp_path / "report.md").exists() and (tmp_path / "grid.png").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    printed_psnr = float(next(line for line in printed.splitlines() if line.startswith("vae psnr")).split()[-1])
    assert report["measures"]["vae_psnr_db"] == pytest.approx(printed_psnr, abs=0.01)
    assert 0 < report["measures"]["vae_ssim"] <= 1 and "vae_psnr_db" in (tmp_path / "report.md").read_text()
    # the VAE-reconstruction ceiling: the same judge over the same 3 scenes, as a second series
    ceiling = report["series"]["VAE reconstruction (ceiling)"]
    assert set(ceiling) == set(report["categories"])
    assert report["measures"]["vae_reconstruction_overall"] * 3 == pytest.approx(
        round(report["measures"]["vae_reconstruction_overall"] * 3))
    assert "VAE reconstruction (ceiling)" in (tmp_path / "report.md").read_text()
