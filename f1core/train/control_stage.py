"""The ControlNet stage: an F.1 ControlNet (f1core.control) trained on the scene engine's edge, depth or layout
hints against a frozen, trained F.1 model, with the trainer's own loop, state, resume and budgets (`_Stage`).

A run for it starts from the trained checkpoint the ControlNet is for (`init RUN --from MODEL`); each condition is
its own stage (`control_edges`, `control_depth`, `control_layout`) with its own state file, so one run directory
holds one ControlNet per condition. `control_options.json` in the run directory, if present, overrides the
ControlConfig (width, attention, reads_latent) before the first step; the state keeps the config it started with.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import read_metadata
from ..control import ControlConfig, F1ControlNet, control_config_for, parameter_count, save_control
from ..diffusion import F1Denoiser, sigma_to_timestep, edm_coefficients
from ..hints import scene_hint
from . import distributed as dist_utils
from .losses import edm_loss_weight, log_normal_sigmas
from .trainer import BASE_NAME, INIT_FROM_KEY, _seeded, _Stage, load_state, trainee_parts

CONTROL_STAGES = {"control_edges": "edges", "control_depth": "depth", "control_layout": "layout"}
OPTIONS_NAME = "control_options.json"


class ControlTrainee(nn.Module):
    """The ControlNet (the only registered, trained module) beside the frozen U-Net and text encoder, which are
    kept out of the state dict so the stage's state and EMA hold the ControlNet alone."""

    def __init__(self, control: F1ControlNet, denoiser: F1Denoiser, text):
        super().__init__()
        self.control = control
        self.frozen = (denoiser.requires_grad_(False).eval(), text.requires_grad_(False).eval())

    def forward(self, x0, hint, tokens, sigma, noise):
        denoiser, text = self.frozen
        with torch.no_grad():
            enc = text.encode_ids(tokens)
        s = sigma.reshape(-1, 1, 1, 1)
        x = x0 + s * noise
        c_in = edm_coefficients(s, denoiser.schedule.sigma_data)[0]
        # the inputs core's ControlNet gives a control model: the U-Net's own (c_in * x, EDM's c_noise)
        control = self.control(x * c_in, hint, sigma_to_timestep(sigma), enc.context, enc.pooled)
        denoised = denoiser(x, sigma, context=enc.context, y=enc.pooled, context_mask=enc.mask, control=control)
        per_sample = (edm_loss_weight(s, denoiser.schedule.sigma_data) * (denoised - x0).square()).mean(dim=(1, 2, 3))
        return dist_utils.global_mean(per_sample.sum(), x0.new_tensor(float(x0.shape[0])))


def control_options(run_dir: Path) -> dict:
    path = Path(run_dir) / OPTIONS_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


class ControlStage(_Stage):
    def __init__(self, run_dir, dataset, config, device):
        self.name = config.stage
        self.condition = CONTROL_STAGES[config.stage]
        if not hasattr(dataset, "render"):
            raise ValueError("--data: the ControlNet stage trains on the scene engine's hints; use --data scenes")
        self._latents: dict[int, torch.Tensor] = {}
        self._hints: dict[int, torch.Tensor] = {}
        super().__init__(run_dir, dataset, config, device)

    def build(self, base, state):
        if INIT_FROM_KEY not in base.metadata or load_state(self.run_dir, "diffusion") is not None:
            raise ValueError(f"run_dir: {self.run_dir} is not a run started from a trained model; a ControlNet is "
                             "trained for one fixed model: `python -m f1core.train init RUN --from MODEL.safetensors`")
        if state is not None:
            control_config = ControlConfig.from_json(state["control_config"])
        else:
            control_config = control_config_for(base.config, self.condition, **control_options(self.run_dir))
        self.vae = base.vae.eval().requires_grad_(False).to(self.device)
        denoiser = F1Denoiser(base.unet, base.config.schedule).to(self.device)
        with _seeded(self.config.seed):
            control = F1ControlNet(control_config)
        self.share = parameter_count(control) / parameter_count(base.unet)
        return (ControlTrainee(control, denoiser, base.text.to(self.device)), None,
                {"control_config": control_config.to_json()})

    def _item(self, index: int):
        """(latent, hint) of a dataset item, rendered and encoded once (hints kept as uint8)."""
        if index not in self._latents:
            sample = self.dataset.render(index)
            image = sample.image.permute(2, 0, 1)[None].to(self.device) * 2 - 1
            with torch.no_grad():
                self._latents[index] = self.vae.encode(image)[0].half().cpu()
            self._hints[index] = (scene_hint(sample, self.condition) * 255).round().to(torch.uint8)
        return self._latents[index].float(), self._hints[index].float() / 255

    def step(self, step: int) -> dict:
        cfg = self.config
        indices = self.local_indices(step)
        _, captions = self.captions(step, indices)
        latents, hints = zip(*(self._item(int(i)) for i in indices))
        x0 = torch.stack(latents).to(self.device)
        hint = torch.stack(hints)[:, None].expand(-1, 3, -1, -1).to(self.device)
        tokens = self.trainee.frozen[1].tokenize(captions).to(self.device)
        sigma = log_normal_sigmas(self.randn(step, (), "sigma"), cfg.p_mean, cfg.p_std)
        noise = self.randn(step, x0.shape[1:], "noise")
        loss = self.trainee_ddp(x0, hint, tokens, sigma, noise)
        self.optimise(step, loss)
        return {"loss": float(loss.detach()), "control_share": self.share}

    def score(self, curve) -> dict:
        return {}  # the judge's curve scores text-to-image; ControlNet adherence is benchmarks/controlnet.py's


def export_control(run_dir, stage: str, out_path) -> Path:
    """The stage's EMA ControlNet as an F.1 ControlNet file, naming the model it was trained for."""
    run_dir = Path(run_dir)
    if stage not in CONTROL_STAGES:
        raise ValueError(f"stage: expected one of {sorted(CONTROL_STAGES)}, got {stage!r}")
    state = load_state(run_dir, stage)
    if state is None:
        raise ValueError(f"run_dir: {run_dir} has no {stage}.pt; train the '{stage}' stage before exporting it")
    control = F1ControlNet(ControlConfig.from_json(state["control_config"]))
    control.load_state_dict(trainee_parts(state["ema"])["control"])
    base = read_metadata(run_dir / BASE_NAME)
    return save_control(out_path, control, {
        "f1.description": f"F.1 ControlNet ({CONTROL_STAGES[stage]}), {state['step']} steps (EMA weights)",
        "f1.control_base": base.get(INIT_FROM_KEY, ""), "f1.control_step": str(state["step"]),
        # the base file's own training step: the same file name can hold a later model
        "f1.control_base_step": base.get("f1.train_step", "")})
