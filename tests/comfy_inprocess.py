"""Import ComfyUI's `comfy` package and this pack inside the test process (no server).

ComfyUI parses sys.argv when model_management is imported; without `--cpu` it looks for a CUDA driver."""
import importlib
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def import_comfy():
    comfy_dir = Path(os.environ.get("COMFYUI_DIR") or ROOT / ".comfyui")
    if not (comfy_dir / "comfy").is_dir():
        raise RuntimeError(f"no ComfyUI at {comfy_dir}: run `make setup`")
    if str(comfy_dir) not in sys.path:
        sys.path.insert(0, str(comfy_dir))
    import comfy.options
    comfy.options.enable_args_parsing(True)
    argv, sys.argv = sys.argv, [sys.argv[0], "--cpu"]
    try:
        import comfy.model_management  # noqa: F401  (parses --cpu here)
        import comfy.sample  # noqa: F401
        import comfy.samplers  # noqa: F401
    finally:
        sys.argv = argv
    return comfy


def import_pack(module: str = ""):
    """The pack under an importable name, so its relative imports (`..f1core`) resolve."""
    name = "comfyui_f1"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{name}.{module}" if module else name)
