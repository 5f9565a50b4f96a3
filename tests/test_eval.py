"""The detector and scorer against rendered ground truth, the metrics and the report/CLI plumbing."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from f1core.data import splits
from f1core.data.scenes import render_scene
from f1core.data.spec import COLOURS, SHAPES, STYLES, ObjectSpec, Relation, SceneSpec
from f1core.eval import (InceptionFeatures, InceptionUnavailable, clip_score, detect, detector_features,
                         evaluate_renderer, fid, frechet_distance, psnr, score_detection, ssim, write_report)
from f1core.eval import metrics
from f1core.eval.__main__ import main
from f1core.eval.detector import DetectedObject, Detection
from f1core.eval.metrics import frechet_distance_of_features
from f1core.eval.selftest import DEGRADATIONS, run_selftest


def _render(spec, seed=0, size=128):
    return render_scene(spec, size, seed=seed)


def test_every_category_round_trips_through_render_and_detect():
    specs = splits.generate_split("val", per_category=8)
    report = evaluate_renderer(lambda spec: _render(spec, seed=len(spec.to_json())).image, specs, progress=False)
    assert set(report.by_category()) == set(splits.CATEGORIES)
    failed = [(i.name, i.score.failures) for i in report.items if not i.score.passed]
    assert not failed


@pytest.mark.parametrize("style", STYLES)
def test_detector_reads_every_shape_colour_and_style(style):
    for k, shape in enumerate(SHAPES):
        colour = list(COLOURS)[(k + STYLES.index(style)) % len(COLOURS)]
        sample = _render(SceneSpec((ObjectSpec(shape, colour, style, "medium"),)), seed=k)
        (found,) = detect(sample.image).objects
        truth = sample.objects[0]
        assert (found.shape, found.colour, found.style, found.size) == (shape, colour, style, "medium")
        assert abs(found.x - truth.x) < 0.03 and abs(found.y - truth.y) < 0.03


def test_detected_objects_pixels_compare_layouts():
    from f1core.eval.scoring import layout_iou
    spec = SceneSpec((ObjectSpec("circle", "red", position="left"), ObjectSpec("square", "blue", position="right")))
    sample, moved = _render(spec, seed=1), _render(spec, seed=2)
    found = detect(sample.image)
    truth = (sample.masks.sum(0) > 0.5).numpy()
    assert (found.foreground & truth).sum() / (found.foreground | truth).sum() > 0.8
    assert layout_iou(found, detect(sample.image)) == 1.0 and layout_iou(found, detect(moved.image)) < 0.9
    empty = detect(np.full((128, 128, 3), 0.5, dtype=np.float32))
    assert not empty.foreground.any() and layout_iou(empty, empty) == 1.0 and layout_iou(found, empty) == 0.0
    with pytest.raises(ValueError, match="128x128 and 64x64"):
        layout_iou(found, detect(np.full((64, 64, 3), 0.5, dtype=np.float32)))


def test_adherence_reads_a_scene_back_and_punishes_what_breaks_it():
    """ControlNet++-style measures (f1core.eval.adherence) on the scene's own render (the ceiling), a blank picture
    and a picture of the same caption with another layout."""
    from f1core.eval.adherence import adherence, edge_f1, mask_miou
    spec = SceneSpec((ObjectSpec("circle", "red", position="left"), ObjectSpec("square", "blue", position="right")))
    sample, moved = render_scene(spec, 64, seed=1), render_scene(spec, 64, seed=2)
    truth = adherence(sample.image, sample)
    assert truth["passed"] and truth["edge_f1"] > 0.8 and truth["mask_miou"] > 0.8 and truth["depth_rmse"] < 0.03
    blank = adherence(sample.image[:1, :1].expand(64, 64, 3).contiguous(), sample)
    assert blank["edge_f1"] == 0 and blank["mask_miou"] == 0 and blank["depth_rmse"] > 0.2 and not blank["passed"]
    other = adherence(moved.image, sample)
    assert other["passed"] and other["mask_miou"] < truth["mask_miou"] - 0.2
    assert other["edge_f1"] < truth["edge_f1"] - 0.2 and other["depth_rmse"] > truth["depth_rmse"] + 0.02
    line = torch.zeros(32, 32, dtype=torch.bool)
    line[10] = True
    assert edge_f1(line.roll(2, 0), line) == 1.0 and edge_f1(line.roll(3, 0), line) == 0.0
    assert edge_f1(line.roll(3, 0), line, tolerance=3) == 1.0
    masks = sample.masks > 0.5
    assert mask_miou(masks, masks) == 1.0 and mask_miou(masks[:1], masks) == 0.5  # a missing object counts 0
    assert mask_miou(masks[:0], masks[:0]) == 1.0


def test_detector_takes_pil_arrays_and_channel_first_tensors():
    sample = _render("two red stars and a blue circle", seed=2)
    pil = Image.fromarray((sample.image.numpy() * 255).astype(np.uint8))
    for image in (pil, sample.image.permute(2, 0, 1), (sample.image.numpy() * 255).astype(np.uint8)):
        assert sorted(o.shape for o in detect(image).objects) == ["circle", "star", "star"]
    with pytest.raises(ValueError, match="image"):
        detect(torch.zeros(4, 4))


def test_scoring_rejects_images_that_do_not_match():
    image = _render("a red circle to the left of a blue square", seed=4).image
    detection = detect(image)
    assert score_detection(SceneSpec((ObjectSpec("circle", "red", relation=Relation("left of", 1)),
                                      ObjectSpec("square", "blue"))), detection).passed
    flipped = score_detection(SceneSpec((ObjectSpec("circle", "red", relation=Relation("right of", 1)),
                                         ObjectSpec("square", "blue"))), detection)
    assert not flipped.passed and "right of" in flipped.failures[0]
    swapped = score_detection(SceneSpec((ObjectSpec("circle", "blue"), ObjectSpec("square", "red"))), detection)
    assert not swapped.passed and len(swapped.failures) == 3
    assert "2 object(s) the prompt does not ask for: red circle, blue square" in swapped.failures[2]
    lonely = score_detection(SceneSpec((ObjectSpec("circle", "red"),)), detection)
    assert not lonely.passed and "does not ask for: blue square" in lonely.failures[0]
    counted = score_detection(SceneSpec((ObjectSpec("circle", count=2),)), detection)
    assert not counted.passed and "found 1" in counted.failures[0]
    styled = score_detection(SceneSpec((ObjectSpec("circle", "red", "striped"),)), detection)
    assert not styled.passed and "style" in styled.failures[0]


def test_position_thresholds_and_background():
    def obj(x, y):
        return DetectedObject("star", "red", "flat", "small", x, y, 5.0, 50, 0.9, (0, 0, 1, 1))
    spec = SceneSpec((ObjectSpec("star", position="top"),), background="grey")
    assert score_detection(spec, Detection([obj(0.5, 0.2)], "grey", 128, 128)).passed
    assert not score_detection(spec, Detection([obj(0.5, 0.5)], "grey", 128, 128)).passed
    assert not score_detection(spec, Detection([obj(0.5, 0.2)], "white", 128, 128)).passed


def test_psnr_and_ssim():
    image = _render("a large gradient green hexagon", seed=1).image.permute(2, 0, 1)[None]
    noisy = (image + 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert ssim(image, image) > 0.999 and ssim(noisy, image) < 0.9
    assert psnr(noisy, image) < 30 < psnr(image * 0.999, image)
    with pytest.raises(ValueError, match="reconstruction"):
        psnr(image[0], image[0])


def test_frechet_distance_matches_the_gaussian_formula():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([1.0, -2.0, 0.5])
    s1, s2 = torch.diag(torch.tensor([1.0, 4.0, 9.0])), torch.diag(torch.tensor([4.0, 1.0, 1.0]))
    # diagonal covariances: |mu|^2 + sum (sqrt(a) - sqrt(b))^2
    assert frechet_distance(mu, s1, torch.zeros(3), s2) == pytest.approx(5.25 + 1 + 1 + 4)
    a = torch.randn(4000, 3, generator=g)
    assert frechet_distance_of_features(a, torch.randn(4000, 3, generator=g)) < 0.02
    assert frechet_distance_of_features(a, torch.randn(4000, 3, generator=g) + 1) > 2.5


def test_detector_feature_distance_separates_domains():
    def features(text, seeds):
        return torch.stack([detector_features(detect(_render(text, seed=s, size=96).image)) for s in seeds])
    reds = features("two red circles", range(16))
    same = frechet_distance_of_features(reds, features("two red circles", range(16, 32)))
    different = frechet_distance_of_features(reds, features("a blue star and a green square", range(16)))
    assert different > 3 * same


@pytest.fixture
def no_fid_weights(tmp_path, monkeypatch):
    """No standard FID weights anywhere the search looks: not in $F1_FID_INCEPTION, models/ or the hub cache."""
    monkeypatch.delenv(metrics.FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(metrics, "PACK_MODELS", tmp_path / "models")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def test_inception_fd_needs_local_weights_and_is_named_for_its_network(no_fid_weights):
    with pytest.raises(InceptionUnavailable, match=f"FID skipped.*{metrics.FID_WEIGHTS_ENV}"):
        InceptionFeatures(None)
    with pytest.raises(InceptionUnavailable, match="not found"):
        InceptionFeatures(no_fid_weights / "missing.pth")
    from torchvision.models import inception_v3
    torch.manual_seed(0)
    path = no_fid_weights / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=False, init_weights=False).state_dict(), path)
    extractor = InceptionFeatures(path)
    assert extractor.name == metrics.INCEPTION_FD_NAME and extractor.name.startswith("FD-Inception")
    features = extractor(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()


def test_standard_fid_weights_found_locally_give_fid(no_fid_weights, monkeypatch, capsys):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    from torchvision.models import inception_v3
    # The standard FID Inception's layout (pytorch-fid's file: torchvision's module names, 1008 classes) with
    # random weights, He-scaled so that features neither vanish nor blow up, in torch's hub cache, where
    # pytorch-fid keeps its download.
    torch.manual_seed(0)
    state = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False).state_dict()
    hub = no_fid_weights / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({k: v * 6 ** 0.5 if k.endswith("conv.weight") else v for k, v in state.items()},
               hub / metrics.FID_WEIGHTS_FILES[0])
    monkeypatch.setattr(FeatureExtractorInceptionV3, "INPUT_IMAGE_SIZE", 75)  # the same network, 16x cheaper
    extractor = InceptionFeatures()
    assert extractor.name == "FID" and isinstance(extractor.model, FeatureExtractorInceptionV3)
    real = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert fid(real, torch.full((3, 3, 32, 32), 0.25), extractor) > 1

    folder = no_fid_weights / "real"
    folder.mkdir()
    for i, image in enumerate(real):
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    weights = no_fid_weights / "elsewhere.pth"
    (hub / metrics.FID_WEIGHTS_FILES[0]).rename(weights)
    monkeypatch.setenv(metrics.FID_WEIGHTS_ENV, str(weights))
    assert main(["fid", str(folder), str(folder)]) == 0  # identical sets
    assert f"FID: 0.0000 (Inception weights: {weights})" in capsys.readouterr().out


def test_clip_score_hook_ranks_matching_pairs_higher():
    colours = list(COLOURS)
    def image_embed(images):      # stand-in: one-hot of the detected colour
        return torch.stack([torch.eye(len(colours))[colours.index(detect(i).objects[0].colour)] for i in images])
    def text_embed(texts):        # stand-in: one-hot of the colour word
        return torch.stack([torch.eye(len(colours))[[c in t for c in colours].index(True)] for t in texts])
    images = [_render(f"a {c} square", seed=1).image for c in ("red", "blue")]
    matched = clip_score(images, ["a red square", "a blue square"], image_embed, text_embed)
    crossed = clip_score(images, ["a blue square", "a red square"], image_embed, text_embed)
    assert (matched > crossed).all()
    with pytest.raises(ValueError, match="one caption per image"):
        clip_score(images, ["a red square"], image_embed, text_embed)


def test_degradations_change_the_image_but_keep_it_readable():
    rgb = _render("a large red star", seed=0).image.numpy()
    for name, degrade in DEGRADATIONS.items():
        out = degrade(rgb, 0)
        assert out.shape == rgb.shape and np.abs(out - rgb).mean() > 1e-3, name
        assert detect(out).objects[0].shape == "star", name


def test_report_files_and_cli(tmp_path, capsys):
    specs = splits.generate_split("val", per_category=1)
    report = evaluate_renderer(lambda s: _render(s).image, specs, progress=False)
    paths = write_report(report, tmp_path / "report")
    data = json.loads(paths["json"].read_text())
    assert data["overall"] == report.overall and len(data["items"]) == len(specs)
    assert "| category |" in paths["markdown"].read_text()
    assert paths["grid"].stat().st_size > 0 and paths["bars"].stat().st_size > 0

    assert main(["export", "--out", str(tmp_path / "images"), "--limit", "5"]) == 0
    assert main(["score", str(tmp_path / "images"), "--out", str(tmp_path / "scored"), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "overall: 1.0000"
    (tmp_path / "images" / "0000.json").write_text('{"caption": "a teal circle"}')
    assert main(["score", str(tmp_path / "images"), "--no-progress"]) == 2
    assert "teal" in capsys.readouterr().err


def test_selftest_reaches_the_bar_on_a_slice():
    series, clean, ok = run_selftest(size=128, progress=False, limit=30)
    assert ok and clean.overall == 1.0 and set(series) == {"clean", *DEGRADATIONS}


def test_scene_nodes_render_and_evaluate():
    from comfy_inprocess import import_comfy, import_pack
    import_comfy()
    nodes = import_pack("nodes.nodes_scenes")
    image, masks, edges, depth, spec = nodes.F1SceneRender.execute(
        "two outlined green hexagons and a red star", 128, 96, 7).result
    assert image.shape == edges.shape == depth.shape == (1, 96, 128, 3) and masks.shape == (3, 96, 128)
    output = nodes.F1Evaluate.execute(image, spec)
    report, score, annotated = output.result
    assert score == 1.0 and json.loads(report)["images"][0]["passed"]
    assert annotated.shape == (1, 192, 256, 3)  # longer side raised to 256 so the labels stay readable
    wrong = nodes.F1Evaluate.execute(torch.cat([image, torch.flip(image, [2])]), "a red star on the right")
    assert 0.0 <= wrong.result[1] <= 0.5 and "FAIL" in " ".join(wrong.ui["text"])
    with pytest.raises(ValueError, match=r"F1SceneRender: input 'spec'.*teal"):
        nodes.F1SceneRender.execute("a teal circle", 128, 128, 0)
    with pytest.raises(ValueError, match=r"F1Evaluate: input 'image'"):
        nodes.F1Evaluate.execute(image[..., :1], spec)


def _blobs(g, n=18, size=128):
    """Grey ground with many small saturated blobs: what an untrained F.1 paints."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    image = torch.full((3, size, size), 0.55)
    for _ in range(n):
        cy, cx = torch.rand(2, generator=g) * size
        radius = 3 + torch.rand(1, generator=g) * 9
        colour = torch.rand(3, generator=g)
        weight = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius ** 2))
        image = image * (1 - weight) + (colour / colour.max())[:, None, None] * weight
    return (image + 0.05 * torch.randn(3, size, size, generator=g)).clamp(0, 1)


def test_blob_images_do_not_pass_the_judge():
    """Among many blobs one may read as "a star"; an image must hold what the prompt asks for and nothing else."""
    from f1core.data.splits import load_split
    from f1core.eval.scoring import score_detection

    g = torch.Generator().manual_seed(0)
    specs = load_split("test")[::7]
    passed = [spec for spec in specs if score_detection(spec, detect(_blobs(g))).passed]
    assert not passed, f"{len(passed)} of {len(specs)} blob images passed"


def test_attribute_recall_gives_partial_credit_per_attribute():
    from f1core.eval.evaluate import attribute_recall
    items = [
        {"spec": {"objects": [{"shape": "circle", "colour": "red", "size": "large"},
                              {"shape": "square", "colour": "blue", "size": "small"}], "background": "white"},
         "detected": [{"shape": "circle", "colour": "blue"}, {"shape": "star", "colour": "red"}], "background": "grey"},
        {"spec": {"objects": [{"shape": "star", "count": 3}]},
         "detected": [{"shape": "star", "colour": "pink"}] * 3, "background": "white"},
    ]
    assert attribute_recall(items) == {"colour_recall": 1.0, "shape_recall": 2 / 3, "object_count": 1.0,
                                       "background": 0.0, "shape_recall_small": 0.0, "shape_recall_large": 1.0}
