"""Training for every F.1 part: `python -m f1core.train --help`."""
from .data import ImageFolderDataset, SceneDataset
from .trainer import STAGES, TrainConfig, create_run, export, load_state, train

__all__ = ["ImageFolderDataset", "STAGES", "SceneDataset", "TrainConfig", "create_run", "export", "load_state",
           "train"]
