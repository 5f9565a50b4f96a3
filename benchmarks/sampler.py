"""Sampler benchmark: f1core's error-controlled DPM-Solver++ (dpmpp_adaptive), output reuse and guidance
order against ComfyUI core's samplers, side by side on the same denoisers in one run.

    python benchmarks/sampler.py [--threads 2]   # a few minutes on 2 CPU cores
    python benchmarks/sampler.py --overhead      # only the time outside the U-Net, on the shipped default
                                                 # (--trace PATH also saves its torch.profiler trace)

Denoisers:
  mixture: an analytic Gaussian-mixture denoiser in a [4, 8, 8] latent space (exact posterior mean), with a
           class-conditional model and the dynamic CFG of the shipped guider. Samplers are called directly,
           core's from comfy.k_diffusion.sampling.
  f1-tiny: the tiny random F.1 U-Net (f1core.make_tiny) as a ComfyUI MODEL, sampled through core's
           comfy.samplers machinery (guider.sample + KSAMPLER), as SamplerCustomAdvanced does.
  f1-tiny-scenes: the shipped trained default the same way, conditioned on a real prompt (if present).

Error of a run: the median over the batch of RMS(x - reference) / RMS(reference), reference = core
dpmpp_2m with 100 Karras steps.
Model calls (NFE) count guided evaluations, one per sampler step (cond + uncond batched together).
The NFE a sampler needs for a target error is where its sweep stays below it (log-log interpolated). The last line is
`nfe_ratio_vs_dpmpp_2m: X`: dpmpp_adaptive's NFE over core dpmpp_2m's at 1% error on the mixture, the
denoiser closest to a trained one (an exact posterior mean); the random tiny U-Net's field is not.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
import types
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from comfy_inprocess import import_comfy, import_pack  # noqa: E402
from f1core import guidance, sampling  # noqa: E402
from f1core.schedules import karras_sigmas  # noqa: E402

REFERENCE_STEPS = 100
TARGET_ERRORS = (0.03, 0.01, 0.003)
HEADLINE_ERROR = 0.01
FIDELITY = 0.5
SEED = 0
SHIPPED = ROOT / "models" / "f1-tiny-scenes.safetensors"
TRAINED_PROMPT = "a red circle on the left of a blue square"
UNET_RANGE = "F.1 U-Net forward"  # the torch.profiler range of F1UNet.forward in a profiled run


def rel_error(x, reference) -> float:
    """Median over the batch of each sample's RMS(x - reference) / RMS(reference): a few samples that fall
    into another mode near a decision boundary would otherwise dominate, and make every curve jumpy."""
    dims = tuple(range(1, x.ndim))
    per_sample = ((x - reference).pow(2).mean(dims) / reference.pow(2).mean(dims)).sqrt()
    return per_sample.median().item()


def nfe_at(points, target):
    """NFE from which a sweep [(nfe, error)] stays at or below `target`, interpolated log-log between the
    last point above it and the next; None if its last point is still above."""
    points = sorted(points)
    above = [i for i, (_, e) in enumerate(points) if e > target]
    if not above:
        return float(points[0][0])
    i = above[-1]
    if i == len(points) - 1:
        return None
    (n0, e0), (n1, e1) = points[i], points[i + 1]
    w = (math.log(e0) - math.log(target)) / (math.log(e0) - math.log(e1))
    return math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0)))


# ---------------------------------------------------------------- analytic Gaussian-mixture denoiser

class GaussianMixture:
    """K isotropic Gaussians N(mu_k, s_k^2 I) in 3 classes. The conditional model of class c is the mixture
    with class c's weights boosted by COND_BOOST (an imperfect conditional model, as real ones are), so
    guidance has accuracy to gain. denoise(x, sigma, cls) is the exact posterior mean E[x0 | x]."""
    COND_BOOST = 3.0

    def __init__(self, shape=(4, 8, 8), components=12, classes=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.shape, dim = shape, math.prod(shape)
        self.means = torch.randn(components, dim, generator=g, dtype=torch.float64) * 0.8
        self.stds = 0.3 + 0.3 * torch.rand(components, generator=g, dtype=torch.float64)
        self.log_weights = torch.log_softmax(torch.randn(components, generator=g, dtype=torch.float64) * 0.5, 0)
        self.labels = torch.arange(components) % classes
        self.classes = classes

    def denoise(self, x, sigma, cls=None):
        flat = x.double().reshape(x.shape[0], -1)
        s = float(sigma.reshape(-1)[0])
        var = self.stds ** 2 + s * s  # [K]
        sq = torch.cdist(flat, self.means) ** 2  # [B, K]
        logits = self.log_weights - 0.5 * flat.shape[1] * var.log() - 0.5 * sq / var
        if cls is not None:
            logits = logits + math.log(self.COND_BOOST) * (self.labels[None, :] == cls[:, None])
        resp = torch.softmax(logits, dim=1)  # [B, K]
        shrink = self.stds ** 2 / var  # posterior mean per component: mu + shrink * (x - mu)
        out = (resp * shrink).sum(1, keepdim=True) * flat + resp @ ((1 - shrink)[:, None] * self.means)
        return out.reshape(x.shape).to(x.dtype)

    def guided(self, curve, sigma_min, sigma_max):
        def model(x, sigma, cls=None):
            cond, uncond = self.denoise(x, sigma, cls), self.denoise(x, sigma)
            return guidance.cfg_combine(cond, uncond, curve(sigma, sigma_min, sigma_max))
        return model

    def components_of(self, x):
        """Index of the component each sample belongs to (highest likelihood at sigma ~ 0)."""
        flat = x.double().reshape(x.shape[0], -1)
        var = self.stds ** 2
        return (self.log_weights - 0.5 * flat.shape[1] * var.log()
                - 0.5 * torch.cdist(flat, self.means) ** 2 / var).argmax(1)

    def quality(self, x, cls):
        """(class accuracy %, within-class mode coverage error TV, spread ratio): TV between the share of each
        of the class's components among the correctly placed samples and the true conditional weights;
        spread = mean ||x - mu_k||^2 / (dim s_k^2), 1 for samples with the right within-component spread."""
        comp = self.components_of(x)
        correct = self.labels[comp] == cls
        tv = 0.0
        for c in range(self.classes):
            members = (self.labels == c).nonzero().reshape(-1)
            true = torch.softmax(self.log_weights[members], 0)
            got = torch.stack([((comp == k) & (cls == c)).sum() for k in members]).double()
            tv += 0.5 * (got / got.sum().clamp_min(1) - true).abs().sum().item() / self.classes
        flat = x.double().reshape(x.shape[0], -1)
        spread = ((flat - self.means[comp]).pow(2).mean(1) / self.stds[comp] ** 2).mean().item()
        return 100.0 * correct.double().mean().item(), tv, spread


class Counted:
    def __init__(self, model):
        self.model, self.calls, self.seconds = model, 0, 0.0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        start = time.perf_counter()
        out = self.model(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out


def mixture_benchmark(k):
    """Returns the sweeps {name: [(nfe, error)]} and prints the reuse and guidance-order tables."""
    gm = GaussianMixture()
    sigma_min, sigma_max = 0.002, 80.0
    batch = 256
    g = torch.Generator().manual_seed(SEED)
    noise = torch.randn(batch, *gm.shape, generator=g, dtype=torch.float64)
    cls = torch.randint(0, gm.classes, (batch,), generator=g)
    curve = guidance.fidelity_to_curve(FIDELITY, "structure_first")
    model = gm.guided(curve, sigma_min, sigma_max)

    def run(fn, steps=None, **options):
        counted = Counted(model)
        sigmas = karras_sigmas(steps or 2, sigma_min, sigma_max).double()
        x = fn(counted, noise * sigmas[0], sigmas, extra_args={"cls": cls}, disable=True, **options)
        return x, counted.calls

    reference, _ = run(k.sample_dpmpp_2m, REFERENCE_STEPS)
    sweeps = sweep_all(lambda fn, steps=None, **o: run(fn, steps, **o), k, reference, sigma_min, sigma_max)

    # reuse: class accuracy and error at a fixed step count, with and without skipping model calls
    print("\n[mixture] output reuse on dpmpp_2m, 24 steps")
    print(f"{'threshold':>10} {'model calls':>12} {'reused':>7} {'accuracy %':>11} {'error':>8}")
    for threshold in (0.0, 0.05, 0.1, 0.2, 0.4):
        stats = {}
        fn = sampling.with_reuse(sampling.sample_dpmpp_2m, threshold, stats) if threshold else sampling.sample_dpmpp_2m
        x, calls = run(fn, 24)
        acc, _, _ = gm.quality(x, cls)
        print(f"{threshold:>10.2f} {calls:>12d} {stats.get('reused_calls', 0):>7d} {acc:>11.2f} "
              f"{rel_error(x, reference):>8.4f}")

    # guidance order: the same fidelity slider, strongest guidance at high noise or at low noise
    print(f"\n[mixture] guidance order (fidelity curve, dpmpp_2m 24 steps, {batch} samples; "
          "coverage TV and spread: lower TV better, spread nearer 1 better)")
    print(f"{'fidelity':>8} {'order':>16} {'accuracy %':>11} {'coverage TV':>12} {'spread':>7}")
    for fidelity in (0.25, 0.5, 0.75):
        for order in guidance.ORDERS:
            guided = gm.guided(guidance.fidelity_to_curve(fidelity, order), sigma_min, sigma_max)
            sigmas = karras_sigmas(24, sigma_min, sigma_max).double()
            x = sampling.sample_dpmpp_2m(guided, noise * sigmas[0], sigmas, extra_args={"cls": cls}, disable=True)
            acc, tv, spread = gm.quality(x, cls)
            print(f"{fidelity:>8.2f} {order:>16} {acc:>11.2f} {tv:>12.4f} {spread:>7.3f}")
    return sweeps


# ---------------------------------------------------------------- shared sweep

def with_final_denoise(fn):
    """core dpm_adaptive stops at sigma_min with noise left; one more call returns the clean prediction as
    the other samplers do (counted)."""
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None, **options):
        positive = sigmas[sigmas > 0]
        x = fn(model, x, float(positive[-1]), float(sigmas[0]), extra_args=extra_args, disable=disable, **options)
        return model(x, positive[-1] * x.new_ones([x.shape[0]]), **(extra_args or {}))
    return sample


def sweep_all(run, k, reference, sigma_min, sigma_max):
    """{sampler: [(nfe, error)]} for core dpmpp_2m / euler / dpm_adaptive and f1core's samplers."""
    sweeps = {name: [] for name in ("core dpmpp_2m", "core euler", "core dpm_adaptive", "f1 dpmpp_2m",
                                    "f1 dpmpp_adaptive")}
    for steps in (5, 7, 10, 14, 20, 28, 40, 56):
        for name, fn in (("core dpmpp_2m", k.sample_dpmpp_2m), ("f1 dpmpp_2m", sampling.sample_dpmpp_2m)):
            x, calls = run(fn, steps)
            sweeps[name].append((calls, rel_error(x, reference)))
    for steps in (10, 20, 40, 80):
        x, calls = run(k.sample_euler, steps)
        sweeps["core euler"].append((calls, rel_error(x, reference)))
    for rtol in (0.1, 0.05, 0.02, 0.01):
        x, calls = run(with_final_denoise(k.sample_dpm_adaptive), rtol=rtol, atol=rtol * 0.156)
        sweeps["core dpm_adaptive"].append((calls, rel_error(x, reference)))
    for factor in (4.0, 2.0, 1.0, 0.5, 0.25, 0.125):
        tolerances = {"rtol": 0.05 * factor, "atol": 0.0078 * factor}
        # the sampler takes its first step from the schedule: give it a coarse one
        x, calls = run(sampling.sample_dpmpp_adaptive, 8, **tolerances)
        sweeps["f1 dpmpp_adaptive"].append((calls, rel_error(x, reference)))
    return sweeps


def print_sweeps(title, sweeps):
    print(f"\n[{title}] model calls to reach a relative error (vs the {REFERENCE_STEPS}-step core dpmpp_2m "
          "reference); '-' = not reached in the sweep")
    header = f"{'sampler':>24} " + " ".join(f"{f'err {e:g}':>10}" for e in TARGET_ERRORS)
    print(header)
    for name, points in sweeps.items():
        cells = [nfe_at(points, e) for e in TARGET_ERRORS]
        print(f"{name:>24} " + " ".join(f"{c:>10.1f}" if c else f"{'-':>10}" for c in cells))
    print(f"{'':>24} (sweep points nfe:error) ")
    for name, points in sweeps.items():
        print(f"{name:>24} " + " ".join(f"{n}:{e:.4f}" for n, e in sorted(points)))


def ratio(sweeps, error=HEADLINE_ERROR):
    ours, core = nfe_at(sweeps["f1 dpmpp_adaptive"], error), nfe_at(sweeps["core dpmpp_2m"], error)
    return None if ours is None or core is None else ours / core


# ---------------------------------------------------------------- tiny F.1 through core's machinery

def f1_setup(checkpoint=None, batch=4):
    """The random tiny F.1 with random conditioning, or a trained `checkpoint` with a real prompt at its
    resolution, as a ComfyUI MODEL whose guided evaluations and U-Net calls are counted and whose U-Net time is
    summed at two boundaries: core's U-Net function wrapper (around BaseModel.apply_model, which also scales
    the input and output; wall and this thread's CPU seconds) and F1UNet.forward (CPU seconds)."""
    import comfy.sample

    from f1core.checkpoint import load_checkpoint
    from f1core.make_tiny import make_tiny
    f1_model, guiders = import_pack("nodes.f1_model"), import_pack("nodes.f1_guider")

    if checkpoint is None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "tiny.safetensors"
            make_tiny(path, seed=0)
            ckpt = load_checkpoint(path)
    else:
        ckpt = load_checkpoint(checkpoint)
    patcher = f1_model.model_patcher_from_unet(ckpt.config, ckpt.unet.state_dict(), ckpt.latent_rgb)
    counter = dict.fromkeys(("calls", "unet_calls", "model_seconds", "model_cpu", "forward_cpu"), 0)

    def count_guided(args):  # every guider ends in core's cfg_function, which runs this once per evaluation
        counter["calls"] += 1
        return args["denoised"]

    def time_model(apply_model, args):
        start, cpu = time.perf_counter(), time.thread_time()
        out = apply_model(args["input"], args["timestep"], **args["c"])
        counter["model_seconds"] += time.perf_counter() - start
        counter["model_cpu"] += time.thread_time() - cpu
        counter["unet_calls"] += 1
        return out

    def forward_started(module, inputs):
        counter["forward_started"] = time.thread_time()

    def forward_ended(module, inputs, output):
        counter["forward_cpu"] += time.thread_time() - counter["forward_started"]

    patcher = patcher.clone()
    patcher.set_model_sampler_post_cfg_function(count_guided)
    patcher.set_model_unet_function_wrapper(time_model)
    patcher.model.diffusion_model.register_forward_pre_hook(forward_started)
    patcher.model.diffusion_model.register_forward_hook(forward_ended)

    if checkpoint is None:
        g = torch.Generator().manual_seed(SEED)
        width = ckpt.config.unet.context_dim
        positive = [[torch.randn(1, 12, width, generator=g),
                     {"pooled_output": torch.randn(1, ckpt.config.unet.pooled_dim, generator=g)}]]
        negative = [[torch.zeros(1, 4, width), {"pooled_output": torch.zeros(1, ckpt.config.unet.pooled_dim)}]]
        side = 16
    else:
        with torch.no_grad():
            text = ckpt.text.eval().encode([TRAINED_PROMPT, ""])
        positive, negative = ([[text.context[i:i + 1][:, text.mask[i]], {"pooled_output": text.pooled[i:i + 1]}]]
                              for i in (0, 1))
        side = ckpt.config.resolution // ckpt.config.vae.downscale
    latent = torch.zeros(batch, ckpt.config.unet.in_channels, side, side)
    guider = guiders.DynamicCFGGuider(patcher, guidance.fidelity_to_curve(FIDELITY))
    guider.set_conds(positive, negative)
    return SimpleNamespace(patcher=patcher, counter=counter, positive=positive, negative=negative, latent=latent,
                           noise=comfy.sample.prepare_noise(latent, SEED), guider=guider, side=side,
                           sigma_range=guiders.sigma_range(patcher))


def f1_benchmark(comfy, k, checkpoint=None, label="f1-tiny"):
    """The error sweeps, then the overhead, on `f1_setup(checkpoint)`."""
    import comfy.samplers
    f1 = f1_setup(checkpoint)
    run_with = setup_runner(f1)
    sigma_min, sigma_max = f1.sigma_range

    def run(fn, steps=None, **options):
        sigmas = karras_sigmas(steps or 2, sigma_min, sigma_max)
        x, calls, _, _ = run_with(f1.guider, comfy.samplers.KSAMPLER(fn, extra_options=options), sigmas)
        return x, calls

    reference, _ = run(k.sample_dpmpp_2m, REFERENCE_STEPS)
    sweeps = sweep_all(run, k, reference, sigma_min, sigma_max)
    overhead(f1, label)
    return sweeps


def setup_runner(f1):
    """run_with(guider, sampler, sigmas) -> (x, guided calls, wall s, U-Net s) on the setup's noise and latent."""
    def run_with(guider, sampler, sigmas):
        f1.counter.update(calls=0, model_seconds=0.0)
        start = time.perf_counter()
        x = guider.sample(f1.noise, f1.latent, sampler, sigmas, disable_pbar=True, seed=SEED)
        return x, f1.counter["calls"], time.perf_counter() - start, f1.counter["model_seconds"]
    return run_with


# ---------------------------------------------------------------- overhead outside the U-Net

def unbatched(model, sample):
    """`sample` with the model's conds made by core's BaseModel.extra_conds (CONDCrossAttn, no context mask)."""
    import comfy.model_base

    def run():
        model.extra_conds = types.MethodType(comfy.model_base.BaseModel.extra_conds, model)
        try:
            return sample()
        finally:
            del model.extra_conds
    return run


def overhead(f1, label, steps=20, repeats=5, trace_path=None):
    """Time outside the U-Net on the sampling nodes' own paths (F1Sampler, core's KSampler, both run as ComfyUI
    runs them: node execute, previews callback, progress) and on the guider + sampler combinations of
    SamplerCustomAdvanced. The paths take turns, `repeats` rounds, so that a change in the machine's load hits
    them alike; medians of this thread's CPU time (wall time on a shared machine counts other jobs' turns).
    Then F1Sampler's and core KSampler's paths run again with the pack's and core's functions on them marked
    (`marks`), and each marked function's own CPU time names where the time outside the U-Net goes. `trace_path`
    receives a torch.profiler trace of one more F1Sampler run with the same marks as ranges; on a shared machine
    its wall-clock times include other jobs' turns, so the tables use CPU time."""
    import comfy.samplers
    import nodes as core_nodes
    f1_nodes, samplers = import_pack("nodes.nodes_sampling"), import_pack("nodes.f1_sampling")
    run_with = setup_runner(f1)
    sigmas = karras_sigmas(steps, *f1.sigma_range)
    core_guider = comfy.samplers.CFGGuider(f1.patcher)
    core_guider.set_conds(f1.positive, f1.negative)
    core_guider.set_cfg(4.0)
    latent = {"samples": f1.latent}

    def node(negative):
        return lambda: f1_nodes.F1Sampler.execute(f1.patcher, f1.positive, negative, latent, SEED, steps, 4.0, 1.0)

    def guided(guider, sampler):
        return lambda: run_with(guider, sampler, sigmas)

    paths = {
        "F1Sampler node (core CFGGuider + f1 dpmpp_2m)": node(f1.negative),
        "core KSampler node (dpmpp_2m, karras)": lambda: core_nodes.common_ksampler(
            f1.patcher, SEED, steps, 4.0, "dpmpp_2m", "karras", f1.positive, f1.negative, latent),
        "core CFGGuider + core dpmpp_2m": guided(core_guider, comfy.samplers.sampler_object("dpmpp_2m")),
        "F1DynamicGuider + f1 dpmpp_2m": guided(f1.guider, samplers.make_sampler("dpmpp_2m")),
        "F1DynamicGuider + f1 dpmpp_adaptive": guided(f1.guider, samplers.make_sampler("dpmpp_adaptive")),
        "F1DynamicGuider + f1 dpmpp_2m + reuse 0.1": guided(f1.guider, samplers.make_sampler("dpmpp_2m", 0.1)),
        # before F1Context: core's CONDCrossAttn concatenates only equal lengths or an lcm at most 4x the shorter,
        # so the prompt (50 tokens) and the empty negative (40) took two U-Net calls per step
        "F1Sampler node, contexts as core's CONDCrossAttn (the previous glue)": unbatched(f1.patcher.model,
                                                                                         node(f1.negative)),
    }

    def timed(sample):
        f1.counter.update(calls=0, unet_calls=0, model_seconds=0.0, model_cpu=0.0, forward_cpu=0.0)
        start, cpu = time.perf_counter(), time.thread_time()
        sample()
        cpu, c = time.thread_time() - cpu, f1.counter
        return {"guided calls": c["calls"], "U-Net calls": c["unet_calls"], "CPU s": cpu,
                "U-Net forward CPU s": c["forward_cpu"],
                "outside the wrapper, %": 100 * (cpu - c["model_cpu"]) / c["model_cpu"],
                "outside the forward, %": 100 * (cpu - c["forward_cpu"]) / c["forward_cpu"],
                "wall s": time.perf_counter() - start}

    for sample in paths.values():
        sample()  # warm-up
    runs = {name: [] for name in paths}
    for _ in range(repeats):
        for name, sample in paths.items():
            runs[name].append(timed(sample))

    batch = f1.latent.shape[0]
    print(f"\n[{label}] overhead, {steps} steps, batch {batch} at {f1.side}x{f1.side} latent, median of {repeats} runs "
          "each: this thread's CPU time outside the U-Net, as a share of the U-Net's, at two boundaries: core's U-Net "
          "function wrapper (BaseModel.apply_model, which also scales the input and output) and F1UNet.forward")
    columns = list(runs[next(iter(runs))][0])
    print(f"| path | {' | '.join(columns)} |\n|---|{'---|' * len(columns)}")
    for name, results in runs.items():
        cells = [statistics.median(r[column] for r in results) for column in columns]
        print(f"| {name} | " + " | ".join(f"{v:g}" if column.endswith("calls") else f"{v:.2f}" if column.endswith("%")
                                           else f"{v:.3f}" for column, v in zip(columns, cells)) + " |")

    for name in list(paths)[:2]:
        ranges, own = marks(f1), {}
        with marked(ranges, own):
            for _ in range(repeats):
                paths[name]()
        if trace_path is not None and name == next(iter(paths)):
            with marked(ranges, {}, profiled=True), torch.profiler.profile() as trace:
                paths[name]()
            trace.export_chrome_trace(str(trace_path))
        unet = own.pop(UNET_RANGE) / repeats
        outside = {what: seconds / repeats for what, seconds in own.items()}
        print(f"\n[{label}] where the CPU time outside the U-Net forward goes, {name}, per run (mean of {repeats}): "
              "each marked function's own time, less the marked functions it calls (torch.profiler ranges of the "
              f"same names: --trace); U-Net forward {1e3 * unet:.0f} ms")
        print("| range (owner: function) | ms | % of U-Net forward |\n|---|---|---|")
        for what, seconds in sorted(outside.items(), key=lambda kv: -kv[1]):
            print(f"| {what} | {1e3 * seconds:.2f} | {100 * seconds / unet:.2f} |")
        for owner in ("pack", "core", "tqdm"):
            seconds = sum(v for k, v in outside.items() if k.startswith(owner))
            print(f"| **{owner}, all** | {1e3 * seconds:.2f} | {100 * seconds / unet:.2f} |")


def marks(f1):
    """(range, holder, attribute): the functions a profiled run marks, the pack's and core's on the two nodes'
    paths, and the console progress bar's redraws (f1core's solver draws it on F1Sampler's path, core's
    k-diffusion loop on KSampler's). A node's range holds whatever the others leave out of its run."""
    import comfy.k_diffusion.sampling
    import comfy.model_base
    import comfy.model_management
    import comfy.sample
    import comfy.sampler_helpers
    import comfy.samplers as core
    import nodes as core_nodes
    import tqdm.std
    f1_nodes, f1_sampling = import_pack("nodes.nodes_sampling"), import_pack("f1core.sampling")
    return [
        (UNET_RANGE, type(f1.patcher.model.diffusion_model), "forward"),
        ("pack: F1Sampler node (inputs, guider, sigmas, latent)", f1_nodes.F1Sampler, "execute"),
        ("pack: f1core solver loop and steps", f1_sampling, "_drive"),
        ("core: KSampler node (common_ksampler, sigmas)", core_nodes, "common_ksampler"),
        ("core: k-diffusion dpmpp_2m loop and steps", comfy.k_diffusion.sampling, "sample_dpmpp_2m"),
        ("core: guider.sample per run (hooks, conds, sampler set-up, clean-up)", core.CFGGuider, "sample"),
        ("core: prepare_sampling (model load, memory estimate)", comfy.sampler_helpers, "prepare_sampling"),
        ("core: process_conds", core, "process_conds"),
        ("core: prepare_noise", comfy.sample, "prepare_noise"),
        ("core: per-call chain (KSamplerX0Inpaint, CFGGuider, sampling_function, wrappers)",
         core.KSamplerX0Inpaint, "__call__"),
        ("core: _calc_cond_batch (batching, output sums)", core, "_calc_cond_batch"),
        ("core: get_area_and_mult (a namedtuple class per cond)", core, "get_area_and_mult"),
        ("core: get_free_memory (psutil)", comfy.model_management, "get_free_memory"),
        ("core: cfg_function", core, "cfg_function"),
        ("core: BaseModel.apply_model (input and output scaling, casts)", comfy.model_base.BaseModel, "apply_model"),
        ("tqdm: the sampler's console progress bar, redraws", tqdm.std.tqdm, "display"),
    ]


@contextlib.contextmanager
def marked(ranges, own, profiled=False):
    """Adds the own CPU time of each (range, holder, attribute) function (this thread's, less that of the marked
    functions it calls) to own[range]; `profiled` also runs it inside a torch.profiler range of that name (off
    otherwise: a range costs tens of microseconds even with no profiler running)."""
    saved, below = [], []  # below: CPU seconds of the marked calls inside each running marked call

    def mark(name, function):
        def call(*args, **kwargs):
            below.append(0.0)
            start = time.thread_time()
            try:
                with torch.profiler.record_function(name) if profiled else contextlib.nullcontext():
                    return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - start
                own[name] = own.get(name, 0.0) + spent - below.pop()
                if below:
                    below[-1] += spent
        return call

    for name, holder, attribute in ranges:
        saved.append((holder, attribute, vars(holder).get(attribute)))
        setattr(holder, attribute, mark(name, getattr(holder, attribute)))
    try:
        yield
    finally:
        for holder, attribute, original in reversed(saved):
            if original is None:
                delattr(holder, attribute)  # it was inherited
            else:
                setattr(holder, attribute, original)


def main():
    import argparse
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job is running)")
    parser.add_argument("--overhead", action="store_true",
                        help="only the overhead outside the U-Net, on the shipped default as its template runs it "
                             "(64x64, batch 1, 20 steps)")
    parser.add_argument("--repeats", type=int, default=5, help="--overhead: runs of each path (medians reported)")
    parser.add_argument("--trace", type=Path, help="--overhead: save the profiled F1Sampler run's torch.profiler "
                                                   "trace here (Chrome trace JSON, for Perfetto)")
    args = parser.parse_args()
    started = time.time()
    comfy = import_comfy()
    import comfy.k_diffusion.sampling as k
    torch.set_num_threads(args.threads)
    if args.overhead:
        overhead(f1_setup(SHIPPED, batch=1), "f1-tiny-scenes", repeats=args.repeats, trace_path=args.trace)
        print(f"({time.time() - started:.0f} s)")
        return
    mixture = mixture_benchmark(k)
    print_sweeps("mixture", mixture)
    results = {"mixture": mixture, "f1-tiny": f1_benchmark(comfy, k)}
    print_sweeps("f1-tiny", results["f1-tiny"])
    if SHIPPED.is_file():
        results["f1-tiny-scenes"] = f1_benchmark(comfy, k, SHIPPED, "f1-tiny-scenes")
        print_sweeps("f1-tiny-scenes", results["f1-tiny-scenes"])
    for error in TARGET_ERRORS:
        print(f"at {error:g} error, dpmpp_adaptive / core dpmpp_2m model calls: " + ", ".join(
            f"{name} {ratio(sweeps, error) or float('nan'):.3f}" for name, sweeps in results.items()))
    print(f"({time.time() - started:.0f} s)")
    print(f"nfe_ratio_vs_dpmpp_2m: {ratio(mixture) or float('nan'):.3f}")


if __name__ == "__main__":
    main()
