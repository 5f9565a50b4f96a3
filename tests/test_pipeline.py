"""Standalone text-to-image (f1core.pipeline) and the evaluator's `model` command on a random tiny checkpoint."""
import json
from pathlib import Path

import pytest
import torch

from f1core.eval.__main__ import main as eval_main
from f1core.make_tiny import make_tiny
from f1core.pipeline import F1Pipeline, upscale_for_detector

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "f1-tiny-scenes.safetensors"


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


def test_explicit_seeds_schedule_sampler_function_and_latent_out(tiny_path):
    from f1core.sampling import sample_dpmpp_2m
    pipe = F1Pipeline.from_file(tiny_path)
    prompts = ["a blue square", "a red circle"]
    reference = pipe(prompts, width=64, height=64, steps=3, seed=6)
    sigmas = pipe.denoiser.sigmas(3)
    same = pipe(prompts, width=64, height=64, seed=[6, 7], sigmas=sigmas, sampler=sample_dpmpp_2m)
    torch.testing.assert_close(same, reference)
    latent = pipe(prompts[1:], width=64, height=64, seed=[7], sigmas=sigmas, decode=False)
    assert latent.shape == (1, pipe.vae.config.latent_channels, 64 // pipe.vae.config.downscale,
                            64 // pipe.vae.config.downscale)
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        pipe(prompts[:1], seed=[1, 2])


def test_a_guidance_curve_is_read_per_step():
    from f1core.guidance import GuidanceCurve, fidelity_to_curve
    pipe = F1Pipeline.from_file(SHIPPED)  # the random tiny model's cond and uncond are equal: no guidance to see
    def latent(cfg):
        return pipe(["a red circle"], width=64, height=64, steps=4, seed=3, cfg=cfg, decode=False)

    torch.testing.assert_close(latent(GuidanceCurve.constant(5.0)), latent(5.0))
    structure, texture = (latent(fidelity_to_curve(0.5, order)) for order in ("structure_first", "texture_first"))
    assert (structure - texture).abs().max() > 1e-3


def test_image_to_image_keeps_the_image_at_low_denoise(tiny_path):
    pipe = F1Pipeline.from_file(tiny_path)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reconstruction = ((pipe.vae.decode(pipe.vae.encode(images * 2 - 1)) + 1) / 2).clamp(0, 1)
    light = pipe(["a red circle", "a star"], steps=2, images=images, denoise=0.05)
    full = pipe(["a red circle", "a star"], steps=2, images=images, denoise=1.0)
    # at denoise 0.05 the start sigma is ~0.01: EDM's skip path returns the image's own latent
    assert (light - reconstruction).abs().mean() < 0.01
    assert (full - reconstruction).abs().mean() > 5 * (light - reconstruction).abs().mean()
    with pytest.raises(ValueError, match="denoise"):
        pipe(["a star"], images=images[:1], denoise=0)
    with pytest.raises(ValueError, match="2 images for 1 prompts"):
        pipe(["a star"], images=images)


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


def test_diagnose_scores_each_stage_of_the_path(tiny_path, tmp_path, capsys):
    from f1core.eval.diagnose import diagnose
    from f1core.data.splits import load_split

    specs = load_split("val")[:4]
    reports = diagnose(F1Pipeline.from_file(tiny_path), specs, denoise_levels=(0.5,), steps=2)
    assert list(reports) == ["ground truth", "VAE reconstruction", "img2img 0.5", "text-to-image"]
    assert reports["ground truth"].overall == 1.0          # the judge reads the engine's own renders
    assert reports["VAE reconstruction"].overall < 1.0     # a random decoder cannot draw them
    # text-to-image here is batched; `eval model` renders one scene per call with the same seeds
    assert eval_main(["model", str(tiny_path), "--split", "val", "--limit", "4", "--steps", "2", "--no-progress",
                      "--out", str(tmp_path / "model")]) == 0
    model_items = json.loads((tmp_path / "model" / "report.json").read_text())["items"]
    assert [i["detected"] for i in reports["text-to-image"].to_dict()["items"]] == [i["detected"] for i in model_items]

    assert eval_main(["diagnose", str(tiny_path), "--limit", "2", "--steps", "2", "--denoise", "0.4",
                      "--out", str(tmp_path / "diag")]) == 0
    table = (tmp_path / "diag" / "diagnose.md").read_text()
    assert "| img2img 0.4 |" in table and "shape_recall" in table
    written = json.loads((tmp_path / "diag" / "diagnose.json").read_text())
    assert written["ground truth"]["overall"] == 1.0
    # a random U-Net's error grows with the noise level: at small sigma EDM's skip path returns the input
    errors = list(written["denoising_error"].values())
    assert errors == sorted(errors) and errors[0] < 0.1 < errors[-1]
    assert written["denoising_error_other_captions"].keys() == written["denoising_error"].keys()
    assert "| ratio |" in table


def test_denoising_error_under_other_captions_measures_how_much_the_text_is_read(tiny_path):
    from f1core.eval.diagnose import denoising_error
    from f1core.data.splits import load_split

    specs, pipe = load_split("val")[:4], F1Pipeline.from_file(tiny_path)
    # the tiny U-Net's zero-initialised attention outputs read no text: the same error under any caption
    assert denoising_error(pipe, specs, sigmas=(1.0,)) == denoising_error(pipe, specs, (1.0,), other_captions=True)
    with torch.no_grad():
        for p in pipe.denoiser.unet.parameters():
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.2)
    assert denoising_error(pipe, specs, sigmas=(1.0,)) != denoising_error(pipe, specs, (1.0,), other_captions=True)
