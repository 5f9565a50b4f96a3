"""Training for every F.1 part: `python -m f1core.train --help`."""
from .data import ImageFolderDataset, SceneDataset
from .trainer import STAGES, TrainConfig, create_run, create_run_from_checkpoint, export, load_state, train

__all__ = ["ImageFolderDataset", "STAGES", "SceneDataset", "TrainConfig", "create_run", "create_run_from_checkpoint",
           "export", "load_state", "train"]
