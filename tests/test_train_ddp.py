"""Two gloo processes with half the batch each train like one process with the whole batch."""
import shutil

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from f1core.train import TrainConfig, create_run, load_state, train
from test_train import ToyDataset, _small_tiny

# Adam with eps far above the gradients steps in proportion to them (momentum SGD), so a wrongly scaled loss
# term on one side would show; with a tiny eps Adam's first steps are +-lr whatever the scale.
COMMON = dict(steps=2, batch_size=4, lr=1.0, adam_eps=100.0, warmup_steps=1, adversarial_start=1)
STAGES = (TrainConfig(stage="vae", **COMMON),
          TrainConfig(stage="diffusion", latent_stat_images=8, unet_adversarial_weight=0.1, decoupling_weight=0.5,
                      decoupling_pairs=6, **COMMON))


def _run_stages(run_dir):
    for config in STAGES:
        train(run_dir, ToyDataset(), config, progress=False)


def _worker(rank, world, run_dir, store):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        _run_stages(run_dir)
    finally:
        dist.destroy_process_group()


def _relative_gap(a: dict, b: dict, init: dict) -> float:
    """|a - b| relative to how far training moved the weights from init, over all float tensors."""
    keys = [k for k in a if a[k].is_floating_point()]
    gap = sum(float((a[k] - b[k]).square().sum()) for k in keys) ** 0.5
    moved = sum(float((a[k] - init[k]).square().sum()) for k in keys) ** 0.5
    assert moved > 0
    return gap / moved


def test_two_processes_match_one(tmp_path):
    data = ToyDataset()
    init = tmp_path / "init"
    create_run(init, _small_tiny(), [data.caption(i, v) for i in range(len(data)) for v in range(2)])
    single, double = tmp_path / "single", tmp_path / "double"
    shutil.copytree(init, single)
    shutil.copytree(init, double)
    _run_stages(single)
    mp.spawn(_worker, args=(2, str(double), str(tmp_path / "store")), nprocs=2, join=True)

    from f1core.checkpoint import load_checkpoint
    base = load_checkpoint(init / "base.safetensors")
    vae_init = {f"vae.{k}": v for k, v in base.vae.state_dict().items()}
    one, two = load_state(single, "vae"), load_state(double, "vae")
    assert one["step"] == two["step"] == 2
    assert _relative_gap(one["trainee"], two["trainee"], vae_init) < 1e-3

    one, two = load_state(single, "diffusion"), load_state(double, "diffusion")
    unet_init = {f"denoiser.unet.{k}": v for k, v in base.unet.state_dict().items()}
    text_init = {f"text.{k}": v for k, v in base.text.state_dict().items()}
    unet_and_text = {k: v for k, v in one["trainee"].items() if k in unet_init or k in text_init}
    assert _relative_gap(unet_and_text, two["trainee"], {**unet_init, **text_init}) < 1e-3
    # the discriminator trains from a rank-synchronised start too
    assert torch.allclose(one["discriminator"]["net.0.weight"], two["discriminator"]["net.0.weight"], atol=1e-4)
