"""GUIDER glue: classifier-free guidance whose scale follows an f1core GuidanceCurve over a MODEL's noise
levels, as a core CFGGuider. Each call hands core's `sampling_function` the cond and scale of its noise
level, so every core guidance hook (calc-cond-batch, pre-CFG such as APG, cfg and post-CFG functions)
applies exactly as under core's own CFGGuider."""
import comfy.samplers

from ..f1core import guidance, plot


def sigma_range(model) -> tuple[float, float]:
    """(sigma_min, sigma_max) of a MODEL's own noise schedule."""
    model_sampling = model.get_model_object("model_sampling")
    return float(model_sampling.sigma_min), float(model_sampling.sigma_max)


class DynamicCFGGuider(comfy.samplers.CFGGuider):
    """CFG whose scale follows a GuidanceCurve over the model's sigma range. Above `switch_sigma` (structure
    phase) the optional 'structure' conditioning replaces 'positive' and the guidance amount (scale - 1) is
    multiplied by structure_strength; at or below it, 'texture' and texture_strength."""

    def __init__(self, model_patcher, curve: guidance.GuidanceCurve, switch_progress: float = 0.5,
                 structure_strength: float = 1.0, texture_strength: float = 1.0):
        super().__init__(model_patcher)
        if not 0.0 <= switch_progress <= 1.0:
            raise ValueError(f"'switch' must be in [0, 1], got {switch_progress}")
        self.curve = curve
        self.sigma_min, self.sigma_max = sigma_range(model_patcher)
        self.switch_sigma = guidance.sigma_at(switch_progress, self.sigma_min, self.sigma_max)
        self.strengths = (structure_strength, texture_strength)

    def set_conds(self, positive, negative, structure=None, texture=None):
        conds = {"positive": positive, "negative": negative}
        for key, value in (("structure", structure), ("texture", texture)):
            if value is not None:
                conds[key] = value
        self.inner_set_conds(conds)

    def is_structure_phase(self, sigma: float) -> bool:
        return sigma > self.switch_sigma

    def scale_at(self, sigma: float) -> float:
        strength = self.strengths[0 if self.is_structure_phase(sigma) else 1]
        return 1.0 + strength * (self.curve(sigma, self.sigma_min, self.sigma_max) - 1.0)

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        sigma = float(timestep.reshape(-1)[0])  # samplers step the whole batch at one sigma
        phase = "structure" if self.is_structure_phase(sigma) else "texture"
        positive = self.conds.get(phase) or self.conds.get("positive")
        return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get("negative"), positive,
                                                self.scale_at(sigma), model_options=model_options, seed=seed)

    def curve_image(self, points: int = 200):
        """The scale over the model's sigma range, phases shaded, as an IMAGE."""
        sigmas = [guidance.sigma_at(i / (points - 1), self.sigma_min, self.sigma_max) for i in range(points)]
        title = (f"dynamic guidance ({self.curve.kind}), strength {self.strengths[0]:g} structure / "
                 f"{self.strengths[1]:g} texture")
        return plot.guidance_plot(sigmas, [self.scale_at(s) for s in sigmas], self.switch_sigma, title)

    def describe(self) -> str:
        probes = [self.sigma_max, guidance.sigma_at(0.25, self.sigma_min, self.sigma_max), self.switch_sigma,
                  guidance.sigma_at(0.75, self.sigma_min, self.sigma_max), self.sigma_min]
        scales = ", ".join(f"{s:.3g}: {self.scale_at(s):.2f}" for s in probes)
        phases = [name for name in ("structure", "texture") if name in self.original_conds]
        prompts = f"; own prompt for {' and '.join(phases)} phase" if phases else ""
        return (f"dynamic guidance ({self.curve.kind}): scale by sigma {{{scales}}}; structure phase above sigma "
                f"{self.switch_sigma:.3g} (strength {self.strengths[0]:g}), texture below (strength "
                f"{self.strengths[1]:g}){prompts}")
