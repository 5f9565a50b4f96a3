"""The F.1 trainer on a tiny config and a toy dataset: losses fall, resume continues exactly, export loads."""
import json
from dataclasses import replace

import pytest
import torch
from safetensors import safe_open

from f1core.checkpoint import build_part, load_checkpoint, save_checkpoint
from f1core.config import tiny
from f1core.train import TrainConfig, create_run, export, load_state, train
from f1core.train.logplot import read_jsonl
from f1core.train.trainer import lr_factor

COLOURS = {"red": (1.0, -1.0, -1.0), "green": (-1.0, 1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}
SIDE = 32


class ToyDataset:
    """A coloured square on the left or right of a grey canvas, captioned accordingly."""

    def __init__(self):
        self.items = [(c, p) for c in COLOURS for p in ("left", "right")] * 2

    def __len__(self):
        return len(self.items)

    def image(self, index):
        colour, side = self.items[index]
        image = torch.zeros(3, SIDE, SIDE)
        x0 = 4 if side == "left" else SIDE - 16
        image[:, 10:22, x0:x0 + 12] = torch.tensor(COLOURS[colour])[:, None, None]
        return image

    def caption(self, index, variant=0):
        colour, side = self.items[index]
        return f"a {colour} square on the {side}" if variant % 2 == 0 else f"{colour} box at the {side}"

    def __getitem__(self, index):
        return self.image(index), self.caption(index)

    def sample_weights(self):
        return torch.full((len(self),), 1.0 / len(self), dtype=torch.float64)


class MaskedToyDataset(ToyDataset):
    """With each square's phrase and mask, for regional training."""

    def regions(self, index):
        colour, _ = self.items[index]
        return [f"a {colour} square"], (self.image(index).abs().sum(0) > 0).float()[None]


def _small_tiny():
    return tiny(vocab_size=600)


def _vae_config(steps, **kw):
    return TrainConfig(stage="vae", steps=steps, batch_size=4, lr=2e-3, warmup_steps=1, log_every=1,
                       adversarial_start=steps - 6, **kw)


def _diffusion_config(steps, **kw):
    defaults = dict(batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, latent_stat_images=8)
    return TrainConfig(stage="diffusion", steps=steps, **defaults | kw)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    data = ToyDataset()
    create_run(run, _small_tiny(), [data.caption(i, v) for i in range(len(data)) for v in range(2)])
    train(run, data, _vae_config(30), progress=False)
    return run


def test_vae_stage_loss_falls_and_logs(vae_run):
    records = [r for r in read_jsonl(vae_run / "log.jsonl") if r["stage"] == "vae"]
    assert len(records) == 30
    def mean(key, rows):
        return sum(r[key] for r in rows) / len(rows)
    assert mean("l1_loss", records[-5:]) < 0.7 * mean("l1_loss", records[:3])
    assert mean("psnr", records[-5:]) > mean("psnr", records[:3]) + 1.0
    assert "discriminator_loss" in records[-1] and "discriminator_loss" not in records[0]  # the adversary starts late
    assert (vae_run / "loss.png").stat().st_size > 0
    state = load_state(vae_run, "vae")
    assert state["step"] == 30


def _copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    (dst / "log.jsonl").unlink()
    return dst


def test_diffusion_resume_is_exact_and_export_loads(vae_run, tmp_path):
    data = ToyDataset()
    straight = _copy_run(vae_run, tmp_path / "straight")
    resumed = _copy_run(vae_run, tmp_path / "resumed")
    config = _diffusion_config(6, unet_adversarial_weight=0.1, adversarial_start=2)
    train(straight, data, config, progress=False)
    assert train(resumed, data, config, progress=False, stop_at=3)["step"] == 3
    assert load_state(resumed, "diffusion")["step"] == 3
    train(resumed, data, config, progress=False)
    a, b = load_state(straight, "diffusion"), load_state(resumed, "diffusion")
    assert a["step"] == b["step"] == 6
    for key in a["trainee"]:
        torch.testing.assert_close(a["trainee"][key], b["trainee"][key], rtol=0, atol=1e-6, msg=key)
    for key in a["ema"]:
        torch.testing.assert_close(a["ema"][key], b["ema"][key], rtol=0, atol=1e-6, msg=key)

    out = export(straight, tmp_path / "model.safetensors")
    loaded = load_checkpoint(out)
    assert loaded.latent_rgb is not None and len(loaded.latent_rgb["factors"]) == loaded.config.unet.in_channels
    assert json.loads(loaded.metadata["f1.train_step"]) == 6
    ema_unet = {k[len("denoiser.unet."):]: v for k, v in a["ema"].items() if k.startswith("denoiser.unet.")}
    for key, value in loaded.unet.state_dict().items():
        torch.testing.assert_close(value, ema_unet[key].to(value.dtype))

    # float16 storage: the floating-point weights in 16 bits, loaded back into float32 modules
    half = export(straight, tmp_path / "half.safetensors", dtype=torch.float16)
    with safe_open(str(half), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} <= {"F16", "I64"}
    assert half.stat().st_size < 0.6 * out.stat().st_size
    loaded_half = load_checkpoint(half)
    for key, value in loaded_half.unet.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ema_unet[key].half().float(), rtol=0, atol=0, msg=key)


def test_decoupling_term_is_logged_moves_the_role_queries_and_resumes_exactly(vae_run, tmp_path):
    """decoupling_weight > 0 adds role_contrastive_loss on the step's factor pairs (drawn by seed and step, so a
    resumed run continues exactly); at the default 0 nothing changes."""
    data = ToyDataset()
    straight = _copy_run(vae_run, tmp_path / "straight")
    resumed = _copy_run(vae_run, tmp_path / "resumed")
    plain = _copy_run(vae_run, tmp_path / "plain")
    config = _diffusion_config(4, decoupling_weight=1.0, decoupling_pairs=6)
    train(straight, data, config, progress=False)
    train(resumed, data, config, progress=False, stop_at=2)
    train(resumed, data, config, progress=False)
    train(plain, data, _diffusion_config(4), progress=False)
    a, b, c = (load_state(run, "diffusion")["trainee"] for run in (straight, resumed, plain))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    queries = "text.adapter.roles.queries"
    assert not torch.allclose(a[queries], c[queries], rtol=0, atol=1e-6)
    logged = [r for r in read_jsonl(straight / "log.jsonl") if r["stage"] == "diffusion"]
    assert len(logged) == 4 and all(r["decoupling_loss"] > 0 for r in logged)
    assert not [r for r in read_jsonl(plain / "log.jsonl") if "decoupling_loss" in r]


def _fixed_batch_loss(checkpoint, data, seed=0):
    """EDM loss of a checkpoint on the whole toy set at fixed noise levels and noise."""
    from f1core.diffusion import F1Denoiser
    g = torch.Generator().manual_seed(seed)
    images = torch.stack([data.image(i) for i in range(len(data))])
    with torch.no_grad():
        x0 = checkpoint.vae.encode(images)
        enc = checkpoint.text.encode([data.caption(i) for i in range(len(data))])
        sigma = torch.tensor([0.3, 1.0, 2.5])[torch.arange(len(data)) % 3]
        noise = torch.randn(x0.shape, generator=g)
        denoiser = F1Denoiser(checkpoint.unet, checkpoint.config.schedule)
        s = sigma[:, None, None, None]
        out = denoiser(x0 + s * noise, sigma, context=enc.context, y=enc.pooled, context_mask=enc.mask)
        return float(((s ** 2 + 1) / s ** 2 * (out - x0) ** 2).mean())


def test_regional_share_trains_phrases_under_object_masks(vae_run, tmp_path):
    data = MaskedToyDataset()
    plain, regional = _copy_run(vae_run, tmp_path / "plain"), _copy_run(vae_run, tmp_path / "regional")
    train(plain, data, _diffusion_config(2), progress=False)
    train(regional, data, _diffusion_config(2, regional_share=0.5), progress=False)
    losses = [[r["diffusion_loss"] for r in read_jsonl(run / "log.jsonl") if r.get("stage") == "diffusion"
               and "diffusion_loss" in r] for run in (plain, regional)]
    assert all(torch.isfinite(torch.tensor(loss)).all() for loss in losses)
    # same seeds, batch and noise, so only the regions differ: the attention the U-Net learns from is not the same
    a, b = (load_state(run, "diffusion")["trainee"] for run in (plain, regional))
    moved = [key for key in a if not torch.equal(a[key], b[key])]
    assert any(".mixer." in key for key in moved), moved
    with pytest.raises(ValueError, match="regional_share"):
        train(_copy_run(vae_run, tmp_path / "refused"), ToyDataset(), _diffusion_config(2, regional_share=0.5),
              progress=False)


def test_scene_regions_are_each_objects_phrase_over_its_instances():
    from f1core.data.captions import parse_caption
    from f1core.train.data import SceneDataset
    data = SceneDataset([parse_caption(c) for c in ("a striped blue square to the left of a red circle",
                                                     "three green triangles")], resolution=64)
    phrases, masks = data.regions(0)
    assert phrases == ["a striped blue square", "a red circle"]
    assert masks.shape == (2, 64, 64)
    columns = torch.arange(64.0)
    centres = [(m.sum(0) * columns).sum() / m.sum() for m in masks]
    assert centres[0] < centres[1]                        # "to the left of" in the render
    phrases, masks = data.regions(1)
    render = data.render(1)
    assert phrases == ["three green triangles"] and len(render.masks) == 3
    torch.testing.assert_close(masks[0], render.masks.amax(0))   # all three under the one phrase


def test_diffusion_stage_lowers_the_denoising_loss(vae_run, tmp_path):
    data = ToyDataset()
    run = _copy_run(vae_run, tmp_path / "run")
    before_path = None
    train(run, data, _diffusion_config(1, ema_decay=0.0), progress=False)
    before_path = export(run, tmp_path / "before.safetensors")
    train(run, data, _diffusion_config(40, ema_decay=0.0), progress=False)
    after_path = export(run, tmp_path / "after.safetensors")
    before = _fixed_batch_loss(load_checkpoint(before_path), data)
    after = _fixed_batch_loss(load_checkpoint(after_path), data)
    assert after < 0.85 * before, (before, after)


def test_run_from_a_checkpoint_continues_its_weights_and_history(vae_run, tmp_path):
    """init --from: the diffusion stage starts from the checkpoint's U-Net, text side, VAE and latent statistics
    (a shipped model continued, or fine-tuned on other data), and the export counts on from its steps."""
    from f1core.train import create_run_from_checkpoint
    data = ToyDataset()
    source_run = _copy_run(vae_run, tmp_path / "source")
    train(source_run, data, _diffusion_config(20), progress=False)
    source_path = export(source_run, tmp_path / "source.safetensors")
    source = load_checkpoint(source_path)

    run = tmp_path / "continued"
    create_run_from_checkpoint(run, source_path)
    train(run, data, _diffusion_config(1, lr=0.0, ema_decay=0.0), progress=False)  # lr 0: the start, unchanged
    start = load_checkpoint(export(run, tmp_path / "start.safetensors"))
    for part in ("unet", "text", "vae"):  # the VAE's buffers include the latent statistics
        expected = getattr(source, part).state_dict()
        for key, value in getattr(start, part).state_dict().items():
            torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=f"{part}.{key}")
    assert start.latent_rgb == source.latent_rgb
    assert start.metadata["f1.train_step"] == "21" and "from source.safetensors" in start.metadata["f1.description"]

    train(run, data, _diffusion_config(30), progress=False)
    later = load_checkpoint(export(run, tmp_path / "later.safetensors"))
    assert _fixed_batch_loss(later, data) < _fixed_batch_loss(source, data)


def test_run_from_a_partial_checkpoint_is_refused(vae_run, tmp_path):
    from f1core.checkpoint import save_checkpoint
    from f1core.train import create_run_from_checkpoint
    data = ToyDataset()
    run = _copy_run(vae_run, tmp_path / "run")
    train(run, data, _diffusion_config(1), progress=False)
    full = load_checkpoint(export(run, tmp_path / "full.safetensors"))
    unet_only = save_checkpoint(tmp_path / "unet_only.safetensors", full.config, unet=full.unet)
    with pytest.raises(ValueError, match=r"unet_only.safetensors lacks the part\(s\) \['vae', 'text'\]"):
        create_run_from_checkpoint(tmp_path / "new", unet_only)
    create_run_from_checkpoint(tmp_path / "again", tmp_path / "full.safetensors")
    with pytest.raises(ValueError, match="already holds a run"):
        create_run_from_checkpoint(tmp_path / "again", tmp_path / "full.safetensors")


def test_bad_config_is_rejected_clearly():
    with pytest.raises(ValueError, match="stage"):
        TrainConfig(stage="unet", steps=1)
    with pytest.raises(ValueError, match="condition_dropout"):
        TrainConfig(stage="diffusion", steps=1, condition_dropout=1.0)
    with pytest.raises(ValueError, match="decay_start"):
        TrainConfig(stage="diffusion", steps=1, decay_start=500, decay_end=500)


def test_cooldown_falls_linearly_to_zero_between_its_steps_after_the_warmup():
    config = TrainConfig(stage="diffusion", steps=10_000, warmup_steps=100, decay_start=1000, decay_end=3000)
    factors = [lr_factor(config, step) for step in (0, 99, 500, 1000, 2000, 2999, 3000, 9000)]
    assert factors == pytest.approx([0.01, 1.0, 1.0, 1.0, 0.5, 0.0005, 0.0, 0.0])
    constant = TrainConfig(stage="diffusion", steps=10_000, warmup_steps=100)
    assert lr_factor(constant, 9000) == 1.0


def test_training_images_hold_no_held_out_combination():
    import torch.nn.functional as F

    from f1core.data.longtail import HELD_OUT
    from f1core.eval.detector import detect
    from f1core.train.data import SceneDataset

    held_out = {(c["colour"], c["shape"]) for c in HELD_OUT.values() if "colour" in c and "shape" in c}
    dataset = SceneDataset.split("train")
    seen = set()
    for index in range(0, len(dataset), len(dataset) // 120):
        image = (dataset.image(index) + 1) / 2  # [-1,1] -> [0,1], 3xHxW
        image = F.interpolate(image[None], scale_factor=2, mode="nearest")[0]  # the detector is verified at 128 px
        seen |= {(o.colour, o.shape) for o in detect(image).objects}
    assert len(seen) > 10  # the check reads real variety
    assert not seen & held_out


def test_cli_stage_stopped_by_sigterm_saves_and_exits_nonzero(tmp_path):
    """A stage stopped early must not look finished, or scripts/train_default.sh would start the next stage."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from PIL import Image

    from f1core.train.__main__ import STOPPED_EARLY

    root = Path(__file__).resolve().parents[1]
    folder = tmp_path / "data"
    folder.mkdir()
    data = ToyDataset()
    for i in range(len(data)):
        pixels = ((data.image(i) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(data.caption(i))
    run = tmp_path / "run"
    cli = [sys.executable, "-m", "f1core.train"]
    subprocess.run(cli + ["init", str(run), "--preset", "tiny", "--vocab-size", "600", "--data", str(folder)],
                   cwd=root, check=True, capture_output=True)
    proc = subprocess.Popen(cli + ["vae", str(run), "--data", str(folder), "--steps", "100000", "--batch-size", "2",
                                   "--threads", "1", "--no-progress", "--set", "log_every=1"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (run / "log.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == STOPPED_EARLY, proc.stderr.read().decode()[-2000:]
    assert load_state(run, "vae")["step"] >= 1


def test_sd_style_baseline_trains_on_the_same_vae_and_exports(vae_run, tmp_path):
    """The baseline variant (no cross-scale attention, CLIP alone) trains from the F.1 run's VAE and round-trips."""
    import dataclasses
    import shutil
    config = _small_tiny()
    config = dataclasses.replace(config, unet=dataclasses.replace(config.unet, cross_scale_levels=()),
                                 text=dataclasses.replace(config.text, fusion="clip"))
    data = ToyDataset()
    run = tmp_path / "baseline"
    create_run(run, config, [data.caption(i, v) for i in range(len(data)) for v in range(2)])
    shutil.copy(vae_run / "vae.pt", run / "vae.pt")
    result = train(run, data, _diffusion_config(3), progress=False)
    assert result["step"] == 3 and result["losses"]["token_loss"] > 0
    with pytest.raises(ValueError, match="decoupling_weight"):   # no adapter, no role tokens to decouple
        train(run, data, _diffusion_config(4, decoupling_weight=0.1), progress=False)
    loaded = load_checkpoint(export(run, tmp_path / "baseline.safetensors"))
    assert loaded.config.text.fusion == "clip" and loaded.config.unet.cross_scale_levels == ()
    names = [*loaded.unet.state_dict(), *loaded.text.state_dict()]
    assert not [n for n in names if "cross_scale" in n or n.startswith(("memory.", "roberta.", "adapter."))]
    vae = {k[len("vae."):]: v for k, v in load_state(vae_run, "vae")["ema"].items()}
    for key, value in loaded.vae.named_parameters():  # buffers hold latent stats, refit by the diffusion stage
        torch.testing.assert_close(value, vae[key], msg=key)


def test_decoder_stage_sharpens_the_exported_vae_without_moving_its_latents(vae_run, tmp_path):
    data = ToyDataset()
    run = _copy_run(vae_run, tmp_path / "run")
    with pytest.raises(ValueError, match="no diffusion.pt; train the 'diffusion' stage"):
        export(run, tmp_path / "untrained.safetensors")   # a fresh run has no U-Net to export yet
    # The toy VAE has plateaued; knock its decoder off its optimum so the stage has something to recover.
    state = load_state(run, "vae")
    generator = torch.Generator().manual_seed(0)
    for key, value in state["ema"].items():
        if key.startswith("vae.decoder.") and value.ndim > 1:
            value.add_(torch.randn(value.shape, generator=generator) * value.std())
    torch.save(state, run / "vae.pt")
    train(run, data, _diffusion_config(1), progress=False)
    before = load_checkpoint(export(run, tmp_path / "before.safetensors"))
    decoder = TrainConfig(stage="decoder", steps=20, batch_size=4, lr=2e-3, warmup_steps=1, log_every=1,
                          ema_decay=0.0)
    train(run, data, decoder, progress=False)
    assert "discriminator" not in load_state(run, "decoder")  # no adversary in this stage
    after = load_checkpoint(export(run, tmp_path / "after.safetensors"))
    images = torch.stack([data.image(i) for i in range(len(data))])

    def psnr(checkpoint):
        with torch.no_grad():
            error = (checkpoint.vae.decode(checkpoint.vae.encode(images)) - images).square().mean()
        return float(10 * torch.log10(4.0 / error))
    assert psnr(after) > psnr(before) + 0.5, (psnr(before), psnr(after))
    with torch.no_grad():  # the U-Net's latent space is untouched
        torch.testing.assert_close(after.vae.encode(images), before.vae.encode(images))
    assert after.metadata["f1.decoder_step"] == "20"
    for key, value in after.unet.state_dict().items():
        torch.testing.assert_close(value, before.unet.state_dict()[key])

    from f1core.train import create_run_from_checkpoint   # a run from this export tunes the decoder further,
    create_run_from_checkpoint(tmp_path / "more", tmp_path / "after.safetensors")   # with no diffusion stage
    train(tmp_path / "more", data, replace(decoder, steps=3), progress=False)
    more = load_checkpoint(export(tmp_path / "more", tmp_path / "more.safetensors"))
    assert more.metadata["f1.decoder_step"] == "23"
    assert more.metadata["f1.train_step"] == after.metadata["f1.train_step"]
    assert more.latent_rgb == after.latent_rgb
    for part in ("unet", "text"):
        for key, value in getattr(more, part).state_dict().items():
            torch.testing.assert_close(value, getattr(after, part).state_dict()[key], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(more.vae.encode(images), after.vae.encode(images), rtol=0, atol=0)
        assert not torch.equal(more.vae.decode(more.vae.encode(images)), after.vae.decode(after.vae.encode(images)))


def test_loss_plot_keeps_stages_apart_when_they_log_side_by_side(tmp_path):
    from f1core.train.logplot import loss_series, plot_losses
    records = []
    for step in range(10, 60, 10):  # two stages appending to one log at the same time
        records.append({"stage": "diffusion", "step": 1000 + step, "loss": 0.5})
        records.append({"stage": "decoder", "step": step, "loss": 0.01, "l1_loss": 0.02})
    series = loss_series(records)
    assert set(series) == {"diffusion/loss", "decoder/loss", "decoder/l1_loss"}
    assert [s for s, _ in series["decoder/loss"]] == [10, 20, 30, 40, 50]
    assert all(abs(v - (-2.0)) < 1e-9 for _, v in series["decoder/loss"])  # not mixed with diffusion's 0.5
    assert plot_losses(records, tmp_path / "loss.png").stat().st_size > 0


def test_learning_curve_is_logged_and_the_latent_pool_reused(vae_run, tmp_path, monkeypatch):
    from f1core.train import trainer as trainer_module
    data = ToyDataset()
    run = _copy_run(vae_run, tmp_path / "curve")
    # 4 samples a step, a point every 8 samples: steps 2 and 4
    train(run, data, _diffusion_config(4, curve_every=8, curve_scenes=7), progress=False, stop_at=2)
    assert (run / trainer_module.LATENTS_NAME).is_file()

    def encode_again(self, *args, **kwargs):
        raise AssertionError("the resumed run encoded the pool again instead of reading latents.pt")
    monkeypatch.setattr(trainer_module.DiffusionStage, "_encode_all", encode_again)
    train(run, data, _diffusion_config(4, curve_every=8, curve_scenes=7), progress=False)

    points = [r for r in read_jsonl(run / "log.jsonl") if r.get("curve")]
    assert [(p["stage"], p["step"], p["samples"]) for p in points] == [("diffusion", 2, 8), ("diffusion", 4, 16)]
    assert 0 < points[0]["cpu_hours"] < points[1]["cpu_hours"]   # carried over the resume
    assert all(0.0 <= p["overall"] <= 1.0 and "acc_position" in p for p in points)
    assert (run / "curve.png").stat().st_size > 0


def test_vae_curve_scores_reconstructions(vae_run, tmp_path):
    run = _copy_run(vae_run, tmp_path / "vae-curve")
    train(run, ToyDataset(), _vae_config(32, curve_every=8, curve_scenes=7), progress=False)
    points = [r for r in read_jsonl(run / "log.jsonl") if r.get("curve")]
    assert [p["step"] for p in points] == [32]   # the run resumed at step 30; 32 * 4 crosses a multiple of 8
    assert 5.0 < points[0]["psnr"] < 60.0 and 0.0 <= points[0]["overall"] <= 1.0


def test_cpu_budget_stops_the_stage_and_a_rerun_continues(vae_run, tmp_path):
    run = _copy_run(vae_run, tmp_path / "budget")
    spent = load_state(run, "vae")["cpu_seconds"] / 3600
    assert train(run, ToyDataset(), _vae_config(40, cpu_hours=spent), progress=False)["step"] == 30  # spent
    # a budget the first step exhausts: one step, saved
    assert train(run, ToyDataset(), _vae_config(40, cpu_hours=spent + 1e-9), progress=False)["step"] == 31
    assert load_state(run, "vae")["step"] == 31
    assert train(run, ToyDataset(), _vae_config(40), progress=False)["step"] == 40


def test_config_overrides_replace_nested_fields_and_refuse_unknown_ones():
    from f1core.config import tiny, with_overrides
    from f1core.train.__main__ import parse_config_overrides
    config = with_overrides(tiny(), parse_config_overrides(["unet.attention_levels=[]", "unet.model_channels=48"]))
    assert config.unet.attention_levels == () and config.unet.model_channels == 48
    assert config.vae == tiny().vae
    with pytest.raises(ValueError, match="unet has no field 'width'"):
        with_overrides(tiny(), {"unet.width": 3})
    with pytest.raises(ValueError, match="set unet.in_channels=14"):   # the parts must agree
        with_overrides(tiny(), {"vae.fine_channels": 12})
    both = with_overrides(tiny(), {"vae.fine_channels": 12, "unet.in_channels": 14})
    assert both.vae.latent_channels == both.unet.in_channels == 14
    with pytest.raises(ValueError, match="FIELD=JSON"):
        parse_config_overrides(["unet.model_channels"])


def test_export_vae_starts_new_runs_that_skip_or_continue_the_vae_stage(vae_run, tmp_path):
    from f1core.config import scenes_x4
    from f1core.train.trainer import export_vae
    vae_file = export_vae(vae_run, tmp_path / "vae.safetensors")
    exported = load_checkpoint(vae_file)
    assert exported.unet is None and exported.text is None and exported.metadata["f1.vae_step"] == "30"
    data = ToyDataset()
    run = tmp_path / "from-vae"
    create_run(run, _small_tiny(), [data.caption(i, v) for i in range(len(data)) for v in range(2)],
               vae_from=vae_file)
    # the diffusion stage starts on the exported VAE without a vae stage
    train(run, data, _diffusion_config(1), progress=False)
    ema = load_state(vae_run, "vae")["ema"]
    diffusion_vae = load_state(run, "diffusion")["vae"]
    key = next(k for k in diffusion_vae if "decoder" in k and k.endswith("weight"))
    torch.testing.assert_close(diffusion_vae[key], ema[f"vae.{key}"])
    # the vae stage continues it, and its export counts the steps on
    train(run, data, _vae_config(2), progress=False)
    assert load_checkpoint(export_vae(run, tmp_path / "vae2.safetensors")).metadata["f1.vae_step"] == "32"
    with pytest.raises(ValueError, match="holds no VAE of this config's shape"):
        create_run(tmp_path / "other", scenes_x4(vocab_size=600), ["a red circle"], vae_from=vae_file)


def test_text_from_takes_the_text_side_and_vocabularies_and_nothing_else(vae_run, tmp_path):
    """init --text-from: pre-trained text towers and adapter (with their vocabularies) in a fresh run whose
    U-Net and VAE are a new random init; a checkpoint of another text shape is refused."""
    from f1core.config import scenes
    data = ToyDataset()
    source_run = _copy_run(vae_run, tmp_path / "source")
    train(source_run, data, _diffusion_config(3), progress=False)
    source = load_checkpoint(export(source_run, tmp_path / "source.safetensors"))
    fresh = load_checkpoint(create_run(tmp_path / "fresh", _small_tiny(), ["a blue square"], seed=1))
    run = load_checkpoint(create_run(tmp_path / "text", _small_tiny(), ["a blue square"], seed=1,
                                     text_from=tmp_path / "source.safetensors"))
    for key, value in run.text.state_dict().items():
        torch.testing.assert_close(value, source.text.state_dict()[key], rtol=0, atol=0, msg=key)
    for part in ("unet", "vae"):
        for key, value in getattr(run, part).state_dict().items():
            torch.testing.assert_close(value, getattr(fresh, part).state_dict()[key], rtol=0, atol=0, msg=key)
    assert run.text.tokenize(["a red circle"]).clip_ids.equal(source.text.tokenize(["a red circle"]).clip_ids)
    assert run.metadata["f1.text_from"] == "source.safetensors"
    with pytest.raises(ValueError, match="holds no text encoder of this config's shape"):
        create_run(tmp_path / "other", scenes(vocab_size=600), ["a red circle"],
                   text_from=tmp_path / "source.safetensors")


def test_unet_from_carries_the_body_to_a_new_latent_and_refuses_another_body(tmp_path):
    """init --unet-from: a U-Net for another latent (more channels, read as 2x2 patches) takes every body
    tensor of the source; only the latent's own convolutions keep the fresh init. Another width is refused."""
    from f1core.config import with_overrides
    source_config = _small_tiny()
    source_file = save_checkpoint(tmp_path / "source.safetensors", source_config,
                                  unet=build_part("unet", source_config))
    source = load_checkpoint(source_file, parts=("unet",)).unet.state_dict()
    other = with_overrides(source_config, {"vae.fine_channels": source_config.vae.fine_channels + 4,
                                           "unet.in_channels": source_config.unet.in_channels + 4,
                                           "unet.patch_size": 2})
    fresh = load_checkpoint(create_run(tmp_path / "fresh", other, ["a blue square"], seed=1)).unet.state_dict()
    run = load_checkpoint(create_run(tmp_path / "moved", other, ["a blue square"], seed=1, unet_from=source_file))
    moved = run.unet.state_dict()
    fresh_keys = {key for key in moved if moved[key].shape != source[key].shape}
    assert fresh_keys == {"conv_in.weight", "conv_out.weight", "conv_out.bias"}
    for key, value in moved.items():
        torch.testing.assert_close(value, fresh[key] if key in fresh_keys else source[key], rtol=0, atol=0,
                                   msg=key)
    assert run.metadata["f1.unet_from"] == "source.safetensors"
    wider = with_overrides(other, {"unet.model_channels": source_config.unet.model_channels * 2})
    with pytest.raises(ValueError, match="differs from this config's .* in more than the latent"):
        create_run(tmp_path / "wider", wider, ["a blue square"], unet_from=source_file)


def test_a_bridged_transplant_reads_the_new_latent_through_the_linear_maps(tmp_path):
    """With a bridge, the new conv_in on a patched latent equals the source's conv_in on its map to the source
    latent, and the new conv_out is the source's mapped back; a VAE bridged to itself gives identity maps."""
    from f1core.config import with_overrides
    from f1core.train.trainer import fit_latent_bridge, transplant_unet
    source_config = _small_tiny()
    other = with_overrides(source_config, {"vae.fine_channels": source_config.vae.fine_channels + 4,
                                           "unet.in_channels": source_config.unet.in_channels + 4,
                                           "unet.patch_size": 2})
    source, unet = build_part("unet", source_config), build_part("unet", other)
    c, c_new = source_config.unet.in_channels, other.unet.in_channels * 4
    to_source, from_source = torch.randn(c, c_new), torch.randn(c_new, c)
    transplant_unet(unet, source, (to_source, from_source))
    patched = torch.randn(2, c_new, 8, 8)
    mapped = torch.einsum("ij,bjhw->bihw", to_source, patched)
    torch.testing.assert_close(unet.conv_in(patched), source.conv_in(mapped), rtol=1e-4, atol=1e-4)
    features = torch.randn(2, source.conv_out.in_channels, 8, 8)
    torch.testing.assert_close(unet.conv_out(features),
                               torch.einsum("ji,bihw->bjhw", from_source, source.conv_out(features)),
                               rtol=1e-4, atol=1e-4)
    vae = build_part("vae", source_config)
    images = torch.rand(8, 3, source_config.resolution, source_config.resolution)
    to_self, from_self, r2 = fit_latent_bridge(vae, vae, images, 1)
    torch.testing.assert_close(to_self, torch.eye(c), rtol=0, atol=1e-4)
    torch.testing.assert_close(from_self, torch.eye(c), rtol=0, atol=1e-4)
    assert min(r2) > 0.999
