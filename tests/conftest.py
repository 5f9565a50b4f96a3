import os
import sys
from pathlib import Path

# Test tensors are tiny: intra-op threads only add contention, and with the ComfyUI server (a child process,
# which inherits this) running beside pytest on a 2-core machine, small ops slowed 25x. One thread each.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

DEFAULT_CKPT = "f1-tiny-random.safetensors"  # a random tiny model, built by the tests
TINY_CONTROLNET = "f1-tiny-random-edges.safetensors"  # a random F.1 ControlNet for it


@pytest.fixture(scope="session")
def comfy():
    """ComfyUI core imported in-process (tests/comfy_inprocess.py), for tests that call core's nodes directly."""
    from comfy_inprocess import import_comfy
    return import_comfy()


@pytest.fixture(scope="session")
def f1_models(tmp_path_factory):
    """A models/f1 folder with a tiny random checkpoint (built here; nothing is downloaded) and a corrupt one."""
    from f1core.make_tiny import make_tiny
    folder = tmp_path_factory.mktemp("models_f1")
    make_tiny(folder / DEFAULT_CKPT, seed=0)
    (folder / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    return folder


@pytest.fixture(scope="session")
def server(f1_models, tmp_path_factory):
    """One real ComfyUI (the pack linked into custom_nodes) on a free loopback port, for the whole session."""
    from comfy_host import ComfyServer
    from f1core.config import tiny
    from f1core.control import control_config_for, random_control, save_control
    controlnets = tmp_path_factory.mktemp("models_f1_controlnet")  # a random F.1 ControlNet for the tiny model
    save_control(controlnets / TINY_CONTROLNET, random_control(control_config_for(tiny())))
    host = ComfyServer(workdir=tmp_path_factory.mktemp("comfyui"), models={"f1": f1_models,
                                                                          "f1_controlnet": controlnets})
    host.start()
    yield host
    host.stop()
