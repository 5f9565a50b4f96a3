import math

import pytest
import torch

from f1core.schedules import (adaptive_sigmas, exponential_sigmas, image_complexity, karras_sigmas, probe_sigmas,
                              prompt_complexity, steps_for_complexity)

H = W = 32


def checkerboard(cell: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (((y // cell + x // cell) % 2) * 2.0 - 1.0).expand(4, H, W)


def smooth_blobs(seed: int) -> torch.Tensor:
    coarse = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0]


@pytest.mark.parametrize("make", [
    lambda n: karras_sigmas(n, 0.002, 80.0),
    lambda n: exponential_sigmas(n, 0.002, 80.0),
])
def test_schedules_descend_to_zero(make):
    sigmas = make(12)
    assert len(sigmas) == 13 and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_exponential_spacing_is_constant_in_log_sigma():
    logs = exponential_sigmas(9, 0.01, 10.0)[:-1].double().log()
    steps = logs[:-1] - logs[1:]
    assert torch.allclose(steps, torch.full_like(steps, math.log(1000) / 8), rtol=1e-5)


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match="sigma_min"):
        exponential_sigmas(5, 1.0, 0.5)
    with pytest.raises(ValueError, match="steps"):
        exponential_sigmas(0, 0.1, 1.0)


def test_image_complexity_orders_images():
    noise = torch.randn(4, H, W, generator=torch.Generator().manual_seed(0))
    images = torch.stack([torch.full((4, H, W), 0.3), smooth_blobs(1), checkerboard(4), noise])
    c = image_complexity(images)
    assert c.shape == (4,) and ((c >= 0) & (c <= 1)).all()
    assert c[0] < 0.01  # flat
    assert c[0] < c[1] < c[2] < c[3]


def test_image_complexity_ignores_scale_but_not_faint_noise():
    x = smooth_blobs(2)[None]
    assert image_complexity(3.0 * x + 1.0).item() == pytest.approx(image_complexity(x).item(), abs=1e-5)
    faint = 0.3 + 1e-3 * torch.randn(1, 4, H, W, generator=torch.Generator().manual_seed(3))
    assert image_complexity(faint).item() < 0.05  # below the contrast floor noise stays simple
    with pytest.raises(ValueError, match="denoised"):
        image_complexity(torch.zeros(4, H, W))


def test_prompt_complexity_grows_with_objects_and_relations():
    short = prompt_complexity("a cat")
    more = prompt_complexity("a red cat and a blue dog")
    related = prompt_complexity("a red cat sitting on a blue dog")
    counted = prompt_complexity("three red cats sitting on two blue dogs behind a wooden fence")
    assert 0 < short < more < related < counted < 1
    assert prompt_complexity("") == 0.0


def test_steps_for_complexity():
    assert steps_for_complexity(0.0, 10, 40) == 10 and steps_for_complexity(1.0, 10, 40) == 40
    steps = [steps_for_complexity(c / 10, 10, 40) for c in range(11)]
    assert steps == sorted(steps)
    with pytest.raises(ValueError, match="complexity"):
        steps_for_complexity(1.5, 10, 40)
    with pytest.raises(ValueError, match="min_steps"):
        steps_for_complexity(0.5, 20, 10)


def test_adaptive_sigmas_more_complex_more_steps_at_low_noise():
    simple, d_simple = adaptive_sigmas(0.1, 0.002, 80.0, 10, 40)
    complex_, d_complex = adaptive_sigmas(0.9, 0.002, 80.0, 10, 40)
    assert len(complex_) > len(simple)
    assert d_simple.steps == len(simple) - 1 and d_complex.steps == len(complex_) - 1
    for sigmas in (simple, complex_):
        assert sigmas[-1] == 0 and (sigmas[1:] < sigmas[:-1]).all()
    # with the count fixed, placement alone moves steps to low noise
    same_simple, _ = adaptive_sigmas(0.1, 0.002, 80.0, 20, 20)
    same_complex, _ = adaptive_sigmas(0.9, 0.002, 80.0, 20, 20)
    assert (same_complex[:-1] < 1.0).sum() > (same_simple[:-1] < 1.0).sum()


def test_schedule_decision_explains_the_choice():
    batch = torch.tensor([0.2, 0.7])
    sigmas, decision = adaptive_sigmas(batch, 0.002, 80.0, 10, 40, prompt=0.3, prompt_weight=0.5)
    assert decision.image_complexities == pytest.approx((0.2, 0.7))
    assert decision.complexity == pytest.approx(0.5 * 0.7 + 0.5 * 0.3)  # the batch max decides
    assert decision.steps == steps_for_complexity(decision.complexity, 10, 40) == len(sigmas) - 1
    assert decision.rho > 7.0
    assert f"{decision.steps} steps" in decision.summary() and "0.700" in decision.summary()
    with pytest.raises(ValueError, match="complexity"):
        adaptive_sigmas(torch.tensor([0.2, 1.3]), 0.002, 80.0, 10, 40)


def test_probe_sigmas_run_from_the_top_to_the_middle_of_the_range_and_end_in_zero():
    sigmas = probe_sigmas(3, 0.002, 80.0)
    assert len(sigmas) == 4 and sigmas[-1] == 0
    assert float(sigmas[0]) == pytest.approx(80.0, rel=1e-6)
    assert float(sigmas[-2]) == pytest.approx(math.sqrt(0.002 * 80.0), rel=1e-5)  # PROBE_PROGRESS 0.5
    with pytest.raises(ValueError, match="probe_steps"):
        probe_sigmas(1, 0.002, 80.0)
