"""F.1 evaluation: a compositional detector and scorer verified on rendered ground truth, reconstruction
metrics, Fréchet distances and a CLIP-style score hook. `python -m f1core.eval selftest` checks the detector."""
from .detector import DetectedObject, Detection, detect
from .evaluate import EvalReport, evaluate_folder, evaluate_pairs, evaluate_renderer
from .metrics import (InceptionFeatures, InceptionUnavailable, clip_score, detector_features, fid,
                      frechet_distance, psnr, ssim)
from .report import write_report
from .scoring import SpecScore, score_detection

__all__ = ["DetectedObject", "Detection", "detect", "EvalReport", "evaluate_folder", "evaluate_pairs",
           "evaluate_renderer", "InceptionFeatures", "InceptionUnavailable", "clip_score", "detector_features",
           "fid", "frechet_distance", "psnr", "ssim", "write_report", "SpecScore", "score_detection"]
