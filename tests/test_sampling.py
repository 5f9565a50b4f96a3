"""Samplers against closed-form Gaussian data.

For data N(mu, diag(s^2)) the ideal denoiser is D(x, sigma) = mu + s^2 / (s^2 + sigma^2) (x - mu) and the
probability-flow ODE from sigma_max to 0 maps x to mu + s / sqrt(s^2 + sigma_max^2) (x - mu).
The samplers' last step, into sigma = 0, returns D(x, sigma_min), which is off the exact flow by about
sigma_min^2 / (2 s^2) |x - mu| (~1e-5 here), far below the discretisation errors measured.
"""
import math

import pytest
import torch

from f1core.sampling import (SAMPLERS, ChangeTrace, ReuseCache, ReuseCalibration, sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_2s,
                             sample_dpmpp_3m_sde, sample_dpmpp_adaptive, sample_euler, with_reuse)
from f1core.schedules import exponential_sigmas, karras_sigmas

SIGMA_MIN, SIGMA_MAX = 1e-3, 80.0


class Gaussian:
    def __init__(self, mu, s):
        self.mu, self.s = mu, s
        self.calls = 0

    def __call__(self, x, sigma, shift=0.0):  # no **kwargs: a stray "seed" would raise here
        self.calls += 1
        var = sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return self.mu + self.s ** 2 / (self.s ** 2 + var) * (x - self.mu) + shift

    def flow(self, x, sigma_from, sigma_to=0.0):
        """Exact probability-flow ODE solution."""
        return self.mu + torch.sqrt((self.s ** 2 + sigma_to ** 2) / (self.s ** 2 + sigma_from ** 2)) * (x - self.mu)


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    model = Gaussian(torch.randn(32, dtype=torch.float64, generator=g), torch.linspace(0.3, 2.0, 32, dtype=torch.float64))
    x = torch.randn(4, 32, dtype=torch.float64, generator=g) * SIGMA_MAX
    return model, x, model.flow(x, SIGMA_MAX)


def karras(n):
    return karras_sigmas(n, SIGMA_MIN, SIGMA_MAX).double()


def error(sampler, model, x, exact, sigmas, **options):
    return (sampler(model, x.clone(), sigmas, disable=True, **options) - exact).abs().max().item()


def observed_order(sampler, model, x, exact, steps=(16, 32, 64, 128), **options):
    """Least-squares slope of -log(error) against log(steps)."""
    log_n = torch.tensor(steps, dtype=torch.float64).log()
    log_e = torch.tensor([error(sampler, model, x, exact, karras(n), **options) for n in steps]).log()
    return -(((log_n - log_n.mean()) * (log_e - log_e.mean())).sum() / ((log_n - log_n.mean()) ** 2).sum()).item()


@pytest.mark.parametrize("sampler, options, low, high", [
    (sample_euler, {}, 0.85, 1.2),
    (sample_dpmpp_2m, {}, 1.8, 2.6),
    (sample_dpmpp_2s, {}, 1.8, 2.6),
    (sample_dpmpp_3m_sde, {"eta": 0.0}, 2.7, 4.5),
])
def test_convergence_order(problem, sampler, options, low, high):
    model, x, exact = problem
    assert low <= observed_order(sampler, model, x, exact, **options) <= high


def test_2s_and_exponential_spacing(problem):
    model, x, exact = problem
    errors = [error(sample_dpmpp_2s, model, x, exact, exponential_sigmas(n, SIGMA_MIN, SIGMA_MAX).double())
              for n in (16, 32, 64)]
    assert all(3.0 < a / b < 5.0 for a, b in zip(errors, errors[1:]))  # halving h quarters the error


def test_final_step_to_zero_returns_denoised_and_callback_per_step(problem):
    model, x, _ = problem
    sigmas = karras(6)
    for name, sampler in SAMPLERS.items():
        if name == "dpmpp_adaptive":
            continue
        seen = []
        out = sampler(model, x.clone(), sigmas, extra_args={"seed": 5}, callback=seen.append, disable=True)
        assert [d["i"] for d in seen] == list(range(len(sigmas) - 1)), name
        assert all(set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"} for d in seen), name
        assert [float(d["sigma"]) for d in seen] == sigmas[:-1].tolist(), name
        assert torch.equal(out, seen[-1]["denoised"]), name


def test_extra_args_reach_the_model_but_seed_does_not(problem):
    model, x, _ = problem
    sigmas = karras(4)
    plain = sample_dpmpp_2m(model, x.clone(), sigmas, disable=True)
    shifted = sample_dpmpp_2m(model, x.clone(), sigmas, extra_args={"shift": 1.0, "seed": 3}, disable=True)
    assert not torch.allclose(plain, shifted)


def test_sigma_max_only_schedule_and_steps_without_zero(problem):
    model, x, _ = problem
    assert torch.equal(sample_dpmpp_2m(model, x.clone(), karras(1)[:1], disable=True), x)
    sigmas = karras(32)[:-1]  # stop at sigma = 0.5: x is still noisy, not the denoised prediction
    sigmas = sigmas[sigmas >= 0.5]
    seen = []
    out = sample_dpmpp_2m(model, x.clone(), sigmas, callback=seen.append, disable=True)
    assert len(seen) == len(sigmas) - 1
    assert (out - seen[-1]["denoised"]).abs().max() > 0.5
    assert (out - model.flow(x, SIGMA_MAX, sigmas[-1].item())).abs().max() < 0.05


@pytest.mark.parametrize("sampler", [sample_dpmpp_2m_sde, sample_dpmpp_3m_sde])
def test_sde_samplers_are_seeded(problem, sampler):
    model, x, _ = problem
    sigmas = karras(10)
    a = sampler(model, x.clone(), sigmas, extra_args={"seed": 1}, disable=True)
    b = sampler(model, x.clone(), sigmas, extra_args={"seed": 1}, disable=True)
    c = sampler(model, x.clone(), sigmas, extra_args={"seed": 2}, disable=True)
    assert torch.equal(a, b) and not torch.allclose(a, c)


@pytest.mark.parametrize("sampler", [sample_dpmpp_2m_sde, sample_dpmpp_3m_sde])
def test_sde_samples_follow_the_data_distribution(sampler):
    n = 3000
    model = Gaussian(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.5, 1.0, 1.5]))
    x = torch.randn(n, 3, generator=torch.Generator().manual_seed(1)) * SIGMA_MAX
    sigmas = karras_sigmas(40, 0.002, SIGMA_MAX)
    out = sampler(model, x, sigmas, extra_args={"seed": 7}, disable=True)
    z = (out.mean(0) - model.mu) / (model.s / math.sqrt(n))
    assert z.abs().max() < 4
    assert ((out.std(0) / model.s - 1).abs() < 0.07).all()
    # the same check catches a sampler that drops its noise: eta = 1 without noise collapses the spread
    silent = sampler(model, x, sigmas, s_noise=0.0, disable=True)
    assert (silent.std(0) / model.s < 0.5).all()


def test_2m_sde_without_noise_is_2m(problem):
    model, x, _ = problem
    sigmas = karras(12)
    assert torch.allclose(sample_dpmpp_2m_sde(model, x.clone(), sigmas, eta=0.0, disable=True),
                          sample_dpmpp_2m(model, x.clone(), sigmas, disable=True))


def test_adaptive_beats_fixed_steps_at_equal_error(problem):
    model, x, exact = problem
    stats = {}
    model.calls = 0
    adaptive_error = error(sample_dpmpp_adaptive, model, x, exact, karras(10), stats=stats)
    assert stats["model_calls"] == model.calls == 1 + stats["accepted"] + stats["rejected"]
    # constant-h 2M with no more model calls than the adaptive run is less accurate
    for n in range(2, stats["model_calls"] + 1):
        assert error(sample_dpmpp_2m, model, x, exact, exponential_sigmas(n, SIGMA_MIN, SIGMA_MAX).double()) > adaptive_error
    assert adaptive_error < 0.1


def test_adaptive_callback_and_end(problem):
    model, x, _ = problem
    seen = []
    out = sample_dpmpp_adaptive(model, x.clone(), karras(10), callback=seen.append, disable=True)
    assert [d["i"] for d in seen] == list(range(len(seen)))
    assert float(seen[-1]["sigma"]) == pytest.approx(SIGMA_MIN) and torch.equal(out, seen[-1]["denoised"])


def test_reuse_threshold_zero_changes_nothing(problem):
    model, x, _ = problem
    sigmas = karras(20)
    cached = ReuseCache(model, 0.0, sigmas)
    out = sample_dpmpp_2m(cached, x.clone(), sigmas, disable=True)
    assert torch.equal(out, sample_dpmpp_2m(model, x.clone(), sigmas, disable=True))
    assert (cached.real_calls, cached.reused_calls) == (20, 0)


def test_reuse_saves_calls_and_beats_fewer_steps(problem):
    model, x, exact = problem
    sigmas = karras(30)
    cached = ReuseCache(model, 0.3, sigmas)
    reuse_error = error(sample_dpmpp_2m, cached, x, exact, sigmas)
    assert cached.reused_calls >= 0.25 * (cached.real_calls + cached.reused_calls)
    # as accurate as spending the same number of real calls on a coarser schedule
    assert reuse_error <= error(sample_dpmpp_2m, model, x, exact, karras(cached.real_calls))


def test_reuse_keeps_first_two_and_last_calls_real(problem):
    model, x, _ = problem
    sigmas = karras(12)
    seen = []

    def recording(x, sigma, **extra):
        seen.append(float(sigma[0]))
        return model(x, sigma, **extra)

    out = with_reuse(sample_dpmpp_2m, threshold=1e9, max_reused_in_row=None)(recording, x.clone(), sigmas,
                                                                             extra_args={"shift": 0.5}, disable=True)
    assert seen == [sigmas[0].item(), sigmas[1].item(), sigmas[-2].item()]
    assert torch.isfinite(out).all()


def test_reuse_never_skips_more_calls_in_a_row_than_allowed(problem):
    model, x, _ = problem
    sigmas = karras(12)
    cached = ReuseCache(model, 1e9, sigmas)  # a threshold that would reuse every call it may
    sample_dpmpp_2m(cached, x.clone(), sigmas, disable=True)
    assert (cached.real_calls, cached.reused_calls) == (7, 5)  # first two real, then alternating, last real
    with pytest.raises(ValueError, match="threshold"):
        ReuseCache(model, math.nan, sigmas)


def calibrated(model, x, sigmas, max_reused_in_row=2):
    """The Gaussian's calibration, fitted on its own full trajectory as benchmarks/adaptive.py fits a model's."""
    trace = ChangeTrace(model)
    sample_dpmpp_2m(trace, x.clone(), sigmas, disable=True)
    assert len(trace.pairs) == len(sigmas) - 2  # one pair per call after the first
    return ReuseCalibration.fit(trace.pairs, max_reused_in_row=max_reused_in_row)


def test_calibration_fits_a_known_polynomial_and_never_goes_negative():
    pairs = [(c, 0.5 * c * c + 2 * c + 0.01) for c in (0.0, 0.1, 0.2, 0.4, 0.8)]
    fitted = ReuseCalibration.fit(pairs)
    assert fitted.coefficients == pytest.approx((0.5, 2.0, 0.01), abs=1e-9)
    assert ReuseCalibration((-1.0, 0.0)).output_change(0.5) == 0.0
    with pytest.raises(ValueError, match="pairs"):
        ReuseCalibration.fit(pairs[:2])


def test_calibrated_reuse_threshold_zero_changes_nothing(problem):
    model, x, _ = problem
    sigmas = karras(20)
    cached = ReuseCache(model, 0.0, sigmas, 3, calibrated(model, x, sigmas, 3))
    assert torch.equal(sample_dpmpp_2m(cached, x.clone(), sigmas, disable=True),
                       sample_dpmpp_2m(model, x.clone(), sigmas, disable=True))
    assert (cached.real_calls, cached.reused_calls) == (20, 0)


def test_calibrated_reuse_reuses_where_the_output_barely_changes(problem):
    model, x, exact = problem
    sigmas = karras(30)
    calibration = calibrated(model, x, sigmas, 3)
    seen = []

    def recording(x, sigma, **extra):
        seen.append(float(sigma[0]))
        return model(x, sigma, **extra)

    cached = ReuseCache(recording, 0.1, sigmas, calibration.max_reused_in_row, calibration)
    reuse_error = error(sample_dpmpp_2m, cached, x, exact, sigmas)
    assert cached.reused_calls >= 0.3 * (cached.real_calls + cached.reused_calls)
    assert reuse_error <= error(sample_dpmpp_2m, model, x, exact, karras(cached.real_calls))
    # never more than the cap in a row: between real calls at most 3 of the schedule's levels are skipped
    real = [levels.index(s) for levels in [sigmas.tolist()] for s in seen]
    assert max(b - a for a, b in zip(real, real[1:])) <= 1 + calibration.max_reused_in_row
    assert seen[-1] == sigmas[-2].item()  # the last step is always real


def test_calibrated_reuse_skips_less_where_the_model_says_change_is_large(problem):
    """Same input changes, a calibration that maps them to large output changes: fewer reuses."""
    model, x, _ = problem
    sigmas = karras(30)
    counts = []
    for scale in (1.0, 10.0):
        calibration = ReuseCalibration((scale, 0.0), max_reused_in_row=3)  # output change = scale * input change
        cached = ReuseCache(model, 0.2, sigmas, calibration.max_reused_in_row, calibration)
        sample_dpmpp_2m(cached, x.clone(), sigmas, disable=True)
        counts.append(cached.reused_calls)
    assert counts[0] > counts[1]


@pytest.mark.parametrize("rtol, atol", [(math.nan, 0.01), (0.05, math.inf), (0.0, 0.0), (-0.1, 0.01)])
def test_adaptive_refuses_bad_tolerances(problem, rtol, atol):
    model, x, _ = problem
    with pytest.raises(ValueError, match="rtol"):
        sample_dpmpp_adaptive(model, x.clone(), karras(10), rtol=rtol, atol=atol, disable=True)


def test_adaptive_step_count_is_capped_however_tight_the_tolerances(problem):
    model, x, _ = problem
    stats = {}
    out = sample_dpmpp_adaptive(model, x.clone(), karras(10), rtol=1e-12, atol=0.0, max_steps=40, stats=stats,
                                disable=True)
    assert stats["accepted"] <= 41 and torch.isfinite(out).all()
