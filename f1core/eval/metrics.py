"""Image metrics: VAE reconstruction (PSNR, SSIM via kornia), Fréchet distances (over an Inception-v3 from local
weights, and over the detector's own features), and a CLIP-style score hook for F.1's alignment heads.

The Inception distance is FID as published only over the standard FID Inception weights (the TF 2015-12-05
port that pytorch-fid, torch-fidelity and torchmetrics use), run by torch-fidelity; nothing is downloaded.
Over torchvision's ImageNet Inception-v3 it is reported as INCEPTION_FD_NAME: those numbers compare only with
each other."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import kornia
import numpy as np
import torch

from ..data.spec import BACKGROUNDS, COLOURS, SHAPES, SIZES, STYLES
from .detector import Detection


def _bchw(images: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected a float tensor [B, 3, H, W] in [0, 1], got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    return images.float()


def psnr(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean PSNR in dB over a batch of [B, 3, H, W] images in [0, 1]."""
    return kornia.metrics.psnr(_bchw(reconstruction, "reconstruction").clamp(0, 1), _bchw(target, "target"), 1.0)


def ssim(reconstruction: torch.Tensor, target: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean SSIM over a batch of [B, 3, H, W] images in [0, 1]."""
    value = kornia.metrics.ssim(_bchw(reconstruction, "reconstruction").clamp(0, 1), _bchw(target, "target"),
                                window_size)
    return value.mean()


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of [N, D] features (float64)."""
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features: expected [N, D] with N >= 2, got {tuple(features.shape)}")
    x = features.double()
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2), with tr (S1 S2)^1/2 taken as the sum of the square roots
    of the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric, so no complex sqrtm is needed)."""
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    vals, vecs = torch.linalg.eigh(sigma1)
    root1 = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    middle = root1 @ sigma2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = float((mu1 - mu2).pow(2).sum() + sigma1.trace() + sigma2.trace() - 2 * trace_root)
    return max(0.0, distance)  # rounding can leave a tiny negative for identical sets


def frechet_distance_of_features(a: torch.Tensor, b: torch.Tensor) -> float:
    return frechet_distance(*feature_statistics(a), *feature_statistics(b))


_VOCABS = (("shape", SHAPES), ("colour", tuple(COLOURS)), ("style", STYLES), ("size", tuple(SIZES)))


def detector_features(detection: Detection) -> torch.Tensor:
    """A fixed-length description of a scene as the detector saw it: how many objects of each shape, colour,
    style and size, where they sit, how shape-like they are, and the background."""
    objects = detection.objects
    parts = [torch.tensor([sum(getattr(o, key) == v for o in objects) for v in vocab], dtype=torch.float32)
             for key, vocab in _VOCABS]
    if objects:
        xy = torch.tensor([[o.x, o.y] for o in objects])
        layout = torch.cat([xy.mean(0), xy.std(0, unbiased=False)])
        quality = torch.tensor([np.mean([o.shape_iou for o in objects])], dtype=torch.float32)
    else:
        layout, quality = torch.zeros(4), torch.zeros(1)
    background = torch.tensor([float(detection.background == b) for b in BACKGROUNDS])
    return torch.cat(parts + [torch.tensor([float(len(objects))]), layout, quality, background])


FID_NAME = "FID"
INCEPTION_FD_NAME = "FD-Inception (torchvision ImageNet weights; not comparable with published FID)"
FID_WEIGHTS_ENV = "F1_FID_INCEPTION"
FID_WEIGHTS_FILES = ("pt_inception-2015-12-05-6726825d.pth",      # pytorch-fid's download
                     "weights-inception-2015-12-05-6726825d.pth")  # torch-fidelity's (and torchmetrics')
PACK_MODELS = Path(__file__).resolve().parents[2] / "models"


def _fid_weight_folders() -> tuple[Path, Path]:
    """The pack's models/ and torch's hub cache (where pytorch-fid and torch-fidelity keep their downloads)."""
    return PACK_MODELS, Path(torch.hub.get_dir()) / "checkpoints"


def fid_weights_path() -> Path | None:
    """The standard FID Inception weights on this machine: $F1_FID_INCEPTION, else either file name in one of
    _fid_weight_folders()."""
    if os.environ.get(FID_WEIGHTS_ENV):
        return Path(os.environ[FID_WEIGHTS_ENV])
    return next((folder / name for folder in _fid_weight_folders() for name in FID_WEIGHTS_FILES
                 if (folder / name).is_file()), None)


class InceptionUnavailable(RuntimeError):
    """Raised when FID is asked for without local Inception-v3 weights; nothing is ever downloaded."""


class InceptionFeatures:
    """Inception-v3 pool features [B, 2048] from local weights (default: fid_weights_path()). The file decides
    the network and `name`: the standard FID Inception state dict (1008 classes) runs in torch-fidelity as FID,
    a torchvision inception_v3 state dict (.pth/.pt or .safetensors) as INCEPTION_FD_NAME.
    Inputs: [B, 3, H, W] in [0, 1]."""

    def __init__(self, weights_path=None, device: str | torch.device = "cpu"):
        path = weights_path or fid_weights_path()
        if not path:
            raise InceptionUnavailable(
                f"FID skipped: no Inception-v3 weights; put {FID_WEIGHTS_FILES[0]} (pytorch-fid's) or "
                f"{FID_WEIGHTS_FILES[1]} (torch-fidelity's) in {' or '.join(map(str, _fid_weight_folders()))}, "
                f"or set {FID_WEIGHTS_ENV} to its path; or pass a torchvision "
                "inception_v3 state dict (--inception-weights, reported as FD-Inception)")
        path = Path(path)
        if not path.is_file():
            raise InceptionUnavailable(f"FID skipped: Inception-v3 weights not found at {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        fc = state.get("fc.weight")
        self.standard = fc is not None and fc.shape[0] == 1008
        self.name, self.weights = (FID_NAME if self.standard else INCEPTION_FD_NAME), path
        self.model = (self._standard(path) if self.standard else self._torchvision(path, state)).eval().to(device)
        self.device = device

    @staticmethod
    def _standard(path: Path) -> torch.nn.Module:
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as err:
            raise InceptionUnavailable(f"FID skipped: the FID Inception weights at {path} need torch-fidelity "
                                       "(pip install torch-fidelity, or torchmetrics[image])") from err
        try:
            return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(path))
        except RuntimeError as err:
            raise ValueError(f"inception weights {path}: not the standard FID Inception state dict ({err})") from err

    @staticmethod
    def _torchvision(path: Path, state: dict) -> torch.nn.Module:
        from torchvision.models import inception_v3
        model = inception_v3(weights=None, aux_logits="AuxLogits.fc.weight" in state, init_weights=False)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"inception weights {path}: not a torchvision inception_v3 state dict "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        model.fc = torch.nn.Identity()
        return model

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _bchw(images, "images").to(self.device)
        if self.standard:  # torch-fidelity takes uint8 and resizes to 299 as TF did
            return self.model((x.clamp(0, 1) * 255).round().to(torch.uint8))[0].float().cpu()
        x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=x.device).view(1, 3, 1, 1)
        return self.model((x - mean) / std).float().cpu()


def fid(real: torch.Tensor, fake: torch.Tensor, extractor: InceptionFeatures, batch_size: int = 32) -> float:
    """Fréchet distance between two image sets [N, 3, H, W] in [0, 1] under the given Inception extractor:
    FID over the standard FID weights, else INCEPTION_FD_NAME (extractor.name says which)."""
    def features(images):
        return torch.cat([extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    return frechet_distance_of_features(features(real), features(fake))


def clip_score(images: Sequence, texts: Sequence[str], image_embed: Callable, text_embed: Callable) -> torch.Tensor:
    """Cosine similarity per (image, text) pair under the given embedders (F.1's alignment heads once trained):
    image_embed(images) -> [N, D], text_embed(texts) -> [N, D]."""
    if len(images) != len(texts):
        raise ValueError(f"texts: {len(texts)} captions for {len(images)} images; pass one caption per image")
    image_vectors = torch.as_tensor(image_embed(images)).float()
    text_vectors = torch.as_tensor(text_embed(list(texts))).float()
    if image_vectors.shape != text_vectors.shape or image_vectors.ndim != 2:
        raise ValueError(f"embedders: image and text embeddings must both be [N, D]; got "
                         f"{tuple(image_vectors.shape)} and {tuple(text_vectors.shape)}")
    return torch.nn.functional.cosine_similarity(image_vectors, text_vectors, dim=-1)
