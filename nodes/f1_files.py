"""Model folders for F.1 files: ComfyUI's models/f1 and the pack's own models/ (generated and shipped weights).

Paths a user configured (extra_model_paths.yaml) are kept; only .safetensors are listed."""
import os

import folder_paths

PACK_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
FOLDER = "f1"


def register_model_folders():
    for path in (os.path.join(folder_paths.models_dir, FOLDER), PACK_MODELS):
        folder_paths.add_model_folder_path(FOLDER, path)
    paths, _ = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, {".safetensors"})
