import math

import pytest
import torch

from f1core.guidance import GuidanceCurve, cfg_combine, curve_from_settings, fidelity_to_curve, sigma_at

LO, HI = 0.002, 80.0
MID = math.sqrt(LO * HI)  # halfway in log sigma


@pytest.mark.parametrize("curve, at_hi, at_mid, at_lo", [
    (GuidanceCurve.constant(5.0), 5.0, 5.0, 5.0),
    (GuidanceCurve.linear(7.0, 2.0), 7.0, 4.5, 2.0),
    (GuidanceCurve.cosine(7.0, 2.0), 7.0, 4.5, 2.0),
    (GuidanceCurve.from_points([(HI, 3.0), (LO, 6.0)]), 3.0, 4.5, 6.0),
])
def test_curve_endpoints_and_midpoint(curve, at_hi, at_mid, at_lo):
    assert curve(HI, LO, HI) == pytest.approx(at_hi)
    assert curve(MID, LO, HI) == pytest.approx(at_mid)
    assert curve(LO, LO, HI) == pytest.approx(at_lo)
    assert curve(10 * HI, LO, HI) == pytest.approx(at_hi)  # beyond the range: held at the end values


def test_cosine_eases_where_linear_does_not():
    linear, cosine = GuidanceCurve.linear(7.0, 2.0), GuidanceCurve.cosine(7.0, 2.0)
    early = math.exp(math.log(HI) - 0.1 * math.log(HI / LO))
    assert cosine(early, LO, HI) > linear(early, LO, HI)


def test_points_are_piecewise_linear_in_log_sigma():
    curve = GuidanceCurve.from_points([(0.1, 2.0), (10.0, 6.0), (1.0, 3.0)])  # any order
    sigmas = torch.tensor([100.0, 10.0, math.sqrt(10.0), 1.0, math.sqrt(0.1), 0.1, 0.01])
    assert torch.allclose(curve(sigmas, LO, HI), torch.tensor([6.0, 6.0, 4.5, 3.0, 2.5, 2.0, 2.0]))


def test_limited_interval_is_one_outside():
    curve = GuidanceCurve.interval(4.0, 0.28, 5.42)
    sigmas = torch.tensor([80.0, 5.43, 5.42, 1.0, 0.28, 0.2, 0.002])
    assert curve(sigmas, LO, HI).tolist() == pytest.approx([1.0, 1.0, 4.0, 4.0, 4.0, 1.0, 1.0])


def test_tensor_sigma_keeps_shape_dtype():
    scale = GuidanceCurve.linear(7.0, 2.0)(torch.tensor([HI, LO], dtype=torch.float16), LO, HI)
    assert scale.dtype == torch.float16 and scale.tolist() == pytest.approx([7.0, 2.0], rel=1e-3)


def test_bad_curves_raise():
    with pytest.raises(ValueError, match="kind"):
        GuidanceCurve("exponential")
    with pytest.raises(ValueError, match="sigma_lo"):
        GuidanceCurve.interval(3.0, 5.0, 1.0)
    with pytest.raises(ValueError, match="points"):
        GuidanceCurve.from_points([(1.0, 2.0), (1.0, 3.0)])
    with pytest.raises(ValueError, match="sigma_min"):
        GuidanceCurve.constant(2.0)(1.0, 5.0, 1.0)


@pytest.mark.parametrize("order", ["structure_first", "texture_first"])
def test_fidelity_mapping_is_monotone(order):
    sigmas = torch.exp(torch.linspace(math.log(HI), math.log(LO), 9))
    scales = torch.stack([fidelity_to_curve(f / 10, order)(sigmas, LO, HI) for f in range(11)])
    assert (scales[1:] >= scales[:-1]).all() and (scales[-1] > scales[0]).all()
    assert (scales >= 1.0).all()


def test_fidelity_order_decides_where_guidance_is_strong():
    structure = fidelity_to_curve(0.8, "structure_first")
    texture = fidelity_to_curve(0.8, "texture_first")
    assert structure(HI, LO, HI) > structure(LO, LO, HI)
    assert texture(HI, LO, HI) < texture(LO, LO, HI)
    assert structure(HI, LO, HI) == pytest.approx(texture(LO, LO, HI))
    with pytest.raises(ValueError, match="order"):
        fidelity_to_curve(0.5, "middle_first")
    with pytest.raises(ValueError, match="fidelity"):
        fidelity_to_curve(1.5)


def test_cfg_combine_maths():
    cond, uncond = torch.full((2, 3), 2.0), torch.full((2, 3), 0.5)
    assert torch.equal(cfg_combine(cond, uncond, 1.0), cond)
    assert torch.equal(cfg_combine(cond, uncond, 0.0), uncond)
    assert torch.allclose(cfg_combine(cond, uncond, 3.0), torch.full((2, 3), 5.0))
    per_item = cfg_combine(cond, uncond, torch.tensor([1.0, 3.0]))
    assert torch.allclose(per_item[0], cond[0]) and torch.allclose(per_item[1], torch.full((3,), 5.0))
    with pytest.raises(ValueError, match="scale"):
        cfg_combine(cond, uncond, torch.ones(3))


def test_sigma_at_is_the_curves_log_sigma_progress():
    assert sigma_at(0.0, LO, HI) == pytest.approx(HI) and sigma_at(1.0, LO, HI) == pytest.approx(LO)
    assert sigma_at(0.5, LO, HI) == pytest.approx(MID)
    assert GuidanceCurve.linear(7.0, 2.0)(sigma_at(0.25, LO, HI), LO, HI) == pytest.approx(5.75)


SETTINGS = dict(fidelity=0.5, order="structure_first", scale_start=5.0, scale_end=2.0, sigma_lo=0.3, sigma_hi=5.0,
                points="10:6, 1:3\n0.1:1.5")


@pytest.mark.parametrize("curve", ["fidelity", "constant", "linear", "cosine", "interval", "points"])
def test_curve_from_settings_builds_each_kind(curve):
    built = curve_from_settings(curve, **SETTINGS)
    assert built.kind == ("cosine" if curve == "fidelity" else curve)
    if curve == "points":
        assert built.points == ((0.1, 1.5), (1.0, 3.0), (10.0, 6.0))


@pytest.mark.parametrize("curve, setting, value, named", [
    ("points", "points", "10-6", "'points'"),
    ("points", "points", " , ", "'points'"),
    ("points", "points", "0:2", "'points'"),
    ("points", "points", "1:nan", "finite"),
    ("interval", "sigma_lo", 6.0, "'sigma_lo'"),
    ("interval", "sigma_lo", math.nan, "'sigma_lo'"),
    ("constant", "scale_start", math.inf, "finite"),
    ("linear", "scale_end", math.nan, "finite"),
    ("fidelity", "fidelity", math.nan, "'fidelity'"),
    ("fidelity", "order", "middle", "'order'"),
    ("sine", "fidelity", 0.5, "'curve'"),
])
def test_curve_from_settings_names_the_bad_setting(curve, setting, value, named):
    with pytest.raises(ValueError, match=named):
        curve_from_settings(curve, **{**SETTINGS, setting: value})
