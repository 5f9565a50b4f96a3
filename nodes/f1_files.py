"""Model folders for F.1 files: ComfyUI's models/f1 and the pack's own models/ (generated and shipped weights).

Paths a user configured (extra_model_paths.yaml) are kept; only .safetensors are listed. A checkpoint must be a
regular file inside one of these folders: symbolic links, and names that resolve outside the folders, are
neither listed nor opened (a link dropped into a shared models folder must not reach the rest of the disk)."""
import os

import folder_paths

PACK_MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
FOLDER = "f1"
CONTROL_FOLDER = "f1_controlnet"   # F.1 ControlNets: models/f1_controlnet and the pack's models/controlnet
CONTROL_SUBFOLDER = "controlnet"
SUFFIX = ".safetensors"
# Checkpoints the pack once shipped, merged into another: a saved workflow that names one loads its successor.
RETIRED = {"f1-tiny-scenes-regions.safetensors": "f1-tiny-scenes.safetensors"}


def register_model_folders():
    for folder, pack in ((FOLDER, PACK_MODELS), (CONTROL_FOLDER, os.path.join(PACK_MODELS, CONTROL_SUBFOLDER))):
        for path in (os.path.join(folder_paths.models_dir, folder), pack):
            folder_paths.add_model_folder_path(folder, path)
        paths, _ = folder_paths.folder_names_and_paths[folder]
        folder_paths.folder_names_and_paths[folder] = (paths, {SUFFIX})


def checkpoint_path(name: str, folder_name: str = FOLDER) -> str:
    """The full path of checkpoint `name` (or of its successor when it is retired and absent); ValueError saying
    why when it is missing, a link or outside."""
    if not isinstance(name, str) or not name.endswith(SUFFIX) or "\0" in name:
        raise ValueError(f"'{name}' is not a {SUFFIX} file name")
    for folder in folder_paths.get_folder_paths(folder_name):
        full = os.path.join(folder, name)
        if not os.path.lexists(full):
            continue
        root, real = os.path.realpath(folder), os.path.realpath(full)
        if os.path.islink(full) or os.path.commonpath([root, real]) != root:
            raise ValueError(f"'{name}' is a symbolic link or resolves outside the F.1 model folder {folder}; "
                             "copy the file itself into the folder")
        if not os.path.isfile(full):
            raise ValueError(f"'{name}' is not a regular file")
        return full
    if folder_name == FOLDER and name in RETIRED:
        return checkpoint_path(RETIRED[name], folder_name)
    raise ValueError(f"'{name}' is not in the F.1 model folders "
                     f"({', '.join(folder_paths.get_folder_paths(folder_name))})")


def checkpoint_names(folder_name: str = FOLDER) -> list[str]:
    """The checkpoints the loader offers: ComfyUI's listing less links and files outside the folders."""
    names = []
    for name in folder_paths.get_filename_list(folder_name):
        if folder_name == FOLDER and name.replace(os.sep, "/").startswith(CONTROL_SUBFOLDER + "/"):
            continue  # the pack's ControlNets sit below its models/ folder; they are not checkpoints
        try:
            checkpoint_path(name, folder_name)
        except ValueError:
            continue
        names.append(name)
    return names
