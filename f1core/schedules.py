"""Noise-level schedules (SIGMAS): descending sigmas ending in 0, as ComfyUI's samplers expect."""
import math
import re
from dataclasses import dataclass

import kornia
import torch

from .guidance import sigma_at


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: `steps` noise levels spaced in sigma^(1/rho), then a final 0."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def full_schedule_steps(steps: int, denoise: float) -> int:
    """Length of the schedule whose last `steps` steps an image-to-image run at `denoise` takes; int() as in
    core's KSampler, so the same settings give the same noise levels everywhere."""
    if not 0.0 < denoise <= 1.0:
        raise ValueError(f"denoise must be in (0, 1], got {denoise}")
    return int(steps / denoise)


def _check_sigma_range(sigma_min: float, sigma_max: float):
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")


def exponential_sigmas(steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """`steps` noise levels evenly spaced in log sigma (constant step in lambda), then a final 0."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    _check_sigma_range(sigma_min, sigma_max)
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64)
    return torch.cat([log_sigmas.exp(), log_sigmas.new_zeros(1)]).float()


# --- Adaptive schedule: the step count and placement follow how complex the image and prompt are. ---

# image_complexity constants. Latents are compared after normalising each image to unit standard
# deviation, but never by less than CONTRAST_FLOOR (in latent units, where the data std is ~1), so a
# nearly flat image stays simple instead of having its faint noise blown up.
CONTRAST_FLOOR = 0.05
# A pixel is on an edge when its Sobel gradient exceeds this many standard deviations per pixel:
# white noise passes ~80% of pixels, a smooth blob image (features ~8 px wide) ~25%, a linear ramp 0%.
EDGE_THRESHOLD = 0.3
HIGH_FREQUENCY_WEIGHT = 0.5  # complexity = w * high-frequency score + (1 - w) * edge density

# prompt_complexity constants: weights of each word class and the scale of the saturating map.
RELATION_WEIGHT = 2.0   # spatial or action relations are what models most often get wrong
COUNT_WEIGHT = 2.0      # explicit counts likewise
PROMPT_SCALE = 15.0     # raw score at which the complexity reaches 1 - 1/e ~ 0.63

# The probe denoises down to the geometric middle of the sigma range (progress 0.5 in log sigma): the layout is
# settled there but the prediction is still cheap to reach in a few coarse steps.
PROBE_PROGRESS = 0.5

# adaptive_sigmas: Karras rho grows to rho * (1 + RHO_GAIN) at complexity 1, moving steps to low noise
# where fine detail forms.
RHO_GAIN = 0.5

_STOPWORDS = frozenset(
    "a an the of and or but with without is are was were be been being it its this that these those to "
    "for from by as at in into onto very really some any there their his her our your my photo picture "
    "image style high quality detailed".split())
_RELATION_WORDS = frozenset(
    "on under over above below behind beside besides next between among inside outside near around "
    "across through against along left right front top bottom beneath atop holding riding wearing "
    "carrying chasing facing touching eating reading playing sitting standing lying".split())
_COUNT_WORDS = frozenset("two three four five six seven eight nine ten eleven twelve dozen pair couple "
                         "several many".split())


def image_complexity(denoised: torch.Tensor) -> torch.Tensor:
    """Complexity in [0, 1] per image of a denoised prediction [B, C, H, W] (take it from an early step,
    where the layout is already visible): the mean of

    - high-frequency score: Laplacian energy of the normalised image divided by the Laplacian energy of
      unit white noise (the kernel's sum of squares), clipped to 1;
    - edge density: the fraction of pixels whose Sobel gradient exceeds EDGE_THRESHOLD.
    A flat image scores 0, white noise ~0.9."""
    if denoised.ndim != 4 or min(denoised.shape[-2:]) < 3:
        raise ValueError(f"denoised must be [B, C, H, W] with H, W >= 3, got shape {tuple(denoised.shape)}")
    x = denoised.float()
    x = x - x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
    x = x / std.clamp_min(CONTRAST_FLOOR)
    kernel = kornia.filters.get_laplacian_kernel2d(3)
    white_noise_energy = (kernel / kernel.abs().sum()).pow(2).sum()  # kornia normalises by the abs sum
    high_frequency = kornia.filters.laplacian(x, 3).pow(2).mean(dim=(1, 2, 3)) / white_noise_energy
    edge_density = (kornia.filters.sobel(x) > EDGE_THRESHOLD).float().mean(dim=(1, 2, 3))
    w = HIGH_FREQUENCY_WEIGHT
    return (w * high_frequency.clamp(max=1.0) + (1 - w) * edge_density).to(denoised.dtype)


def probe_sigmas(probe_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """The probe's schedule: probe_steps levels spaced in log sigma from sigma_max down to the probe sigma, then
    0, so a run over it returns the denoised preview that image_complexity measures (probe_steps model calls)."""
    if probe_steps < 2:
        raise ValueError(f"probe_steps must be at least 2 (the first call only sees noise), got {probe_steps}")
    return exponential_sigmas(probe_steps, sigma_at(PROBE_PROGRESS, sigma_min, sigma_max), sigma_max)


def prompt_complexity(prompt: str) -> float:
    """Complexity in [0, 1] of a prompt, without a model: raw = content words + RELATION_WEIGHT * relation
    words + COUNT_WEIGHT * counts (number words or digits), mapped by 1 - exp(-raw / PROMPT_SCALE).
    'a cat' ~0.06; a paragraph with several objects, relations and counts approaches 1."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    relations = sum(w in _RELATION_WORDS for w in words)
    counts = sum(w in _COUNT_WORDS or w.isdigit() for w in words)
    content = sum(w not in _STOPWORDS and w not in _RELATION_WORDS and w not in _COUNT_WORDS
                  and not w.isdigit() for w in words)
    raw = content + RELATION_WEIGHT * relations + COUNT_WEIGHT * counts
    return 1.0 - math.exp(-raw / PROMPT_SCALE)


def steps_for_complexity(complexity: float, min_steps: int, max_steps: int) -> int:
    """Linear: complexity 0 -> min_steps, 1 -> max_steps, rounded."""
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got min_steps={min_steps}, max_steps={max_steps}")
    if not 0.0 <= complexity <= 1.0:  # also rejects NaN
        raise ValueError(f"complexity must be in [0, 1], got {complexity}")
    return min_steps + round(complexity * (max_steps - min_steps))


@dataclass(frozen=True)
class ScheduleDecision:
    """Why adaptive_sigmas chose its schedule; callers log `summary()`."""
    image_complexities: tuple[float, ...]  # one per image in the batch
    prompt_complexity: float | None
    complexity: float                      # the value that set steps and rho
    steps: int
    rho: float
    min_steps: int
    max_steps: int
    sigma_min: float
    sigma_max: float

    def summary(self) -> str:
        images = ", ".join(f"{c:.3f}" for c in self.image_complexities)
        prompt = "n/a" if self.prompt_complexity is None else f"{self.prompt_complexity:.3f}"
        return (f"adaptive schedule: {self.steps} steps (range {self.min_steps}-{self.max_steps}), rho {self.rho:.2f}; "
                f"complexity {self.complexity:.3f} from image [{images}] (batch max), prompt {prompt}; "
                f"sigma {self.sigma_max:g} -> {self.sigma_min:g}")


def adaptive_sigmas(complexity, sigma_min: float, sigma_max: float, min_steps: int, max_steps: int,
                    rho: float = 7.0, prompt: float | None = None, prompt_weight: float = 0.25):
    """A Karras schedule whose length and placement follow complexity.

    complexity: image complexity in [0, 1], a float or a tensor [B] from image_complexity; one schedule
    serves the whole batch, so the most complex image decides. prompt: optional prompt_complexity,
    blended in as (1 - prompt_weight) * image + prompt_weight * prompt. The step count comes from
    steps_for_complexity and rho grows to rho * (1 + RHO_GAIN), putting more steps at low noise.
    Returns (sigmas ending in 0, ScheduleDecision).
    """
    _check_sigma_range(sigma_min, sigma_max)
    if rho <= 0:
        raise ValueError(f"rho must be positive, got {rho}")
    if not 0.0 <= prompt_weight <= 1.0:
        raise ValueError(f"prompt_weight must be in [0, 1], got {prompt_weight}")
    per_image = tuple(float(c) for c in torch.as_tensor(complexity, dtype=torch.float64).reshape(-1))
    if not per_image or not all(0.0 <= c <= 1.0 for c in per_image):
        raise ValueError(f"complexity must be one or more values in [0, 1], got {per_image}")
    combined = max(per_image)
    if prompt is not None:
        if not 0.0 <= prompt <= 1.0:
            raise ValueError(f"prompt complexity must be in [0, 1], got {prompt}")
        combined = (1 - prompt_weight) * combined + prompt_weight * prompt
    steps = steps_for_complexity(combined, min_steps, max_steps)
    rho_used = rho * (1 + RHO_GAIN * combined)
    decision = ScheduleDecision(per_image, prompt, combined, steps, rho_used, min_steps, max_steps,
                                sigma_min, sigma_max)
    return karras_sigmas(steps, sigma_min, sigma_max, rho_used), decision
