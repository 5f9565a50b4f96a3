"""Complexity-adaptive steps and output reuse, judged (issue 16, items 2 and 3).

    python benchmarks/adaptive.py [--checkpoint PATH] [--scenes N]   # the test run
    python benchmarks/adaptive.py --split val                        # the tuning run
    python benchmarks/adaptive.py --calibration-only                 # only the reuse calibration (val)

Prompt mix: the split's simple scenes (single_object, colours) with complex ones (two_objects, counting,
position), the first N of each category. Scene i is rendered with seed i by every sampler, so accuracies are
paired: a difference between two samplers carries the paired standard error (the spread of per-scene
pass/fail differences), far below the unpaired one.

Samplers (all DPM-Solver++(2M) over the checkpoint's Karras range, cfg 4, through F1Pipeline):
  fixed N          N Karras steps: N model calls.
  adaptive         f1core.schedules.adaptive_sigmas per scene: complexity from an estimator (a probe's image
                   complexity, the prompt's, or both blended as F1AdaptiveKSampler does) sets steps between
                   min_steps and max_steps and the schedule's rho. Calls = probe calls + steps.
  reuse            REFERENCE_STEPS fixed steps under f1core.sampling.with_reuse: the current rule (relative
                   input change, at most one reused call in a row) and the calibrated one (ReuseCalibration,
                   fitted on val trajectories of this checkpoint).
Model calls count guided evaluations (cond + uncond batched). Time: CPU seconds per image of the whole
render (text, sampling, decode) on one thread, which is its wall time on an idle core; the process's CPU
time is measured because a shared machine stretches wall time by whatever else runs.

Every candidate runs on either split; the estimator (TUNED_ESTIMATOR, or --estimator) and the reuse settings
are chosen on val, the reuse calibration is always fitted on val, and test only reports. The last line is
`calls_ratio_at_equal_accuracy: X`: the chosen estimator's model calls over fixed dpmpp_2m's, each the fewest
in its sweep whose judge accuracy is within 1 point of REFERENCE_STEPS fixed steps (None if never).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from f1core import sampling, schedules  # noqa: E402
from f1core.data.captions import caption  # noqa: E402
from f1core.data.splits import load_split  # noqa: E402
from f1core.eval.diagnose import judge  # noqa: E402
from f1core.pipeline import F1Pipeline  # noqa: E402
from f1core.plot import figure  # noqa: E402

SHIPPED = ROOT / "models" / "f1-tiny-scenes.safetensors"
SIMPLE = ("single_object", "colours")
COMPLEX = ("two_objects", "counting", "position")
REFERENCE_STEPS = 30
TOLERANCE = 0.01                        # "equal accuracy": within 1 point of the reference
FIXED_STEPS = (3, 4, 6, 8, 12, 14, 16, 20, 24, REFERENCE_STEPS)
CFG = 4.0
BATCH = 50
CALIBRATION_SCENES = 10                 # val scenes per category whose trajectories fit the reuse calibration


@dataclass(frozen=True)
class Estimator:
    """How a scene's complexity is measured: a probe of probe_steps calls (image complexity of its preview),
    the prompt's complexity, or both blended with prompt_weight on the prompt (as the nodes do); and the
    (min_steps, max_steps) policies swept as its budget knob."""
    name: str
    policies: tuple[tuple[int, int], ...]
    probe_steps: int = 0                # 0: no probe, the prompt alone
    prompt_weight: float = 1.0          # with a probe: weight of the prompt; 0 = image only


ESTIMATORS = {  # (8, 30) with a 3-call probe and prompt weight 0.25 is the nodes' default
    "prompt": Estimator("prompt", ((2, 8), (3, 12), (4, 16), (8, 30), (10, 30), (12, 30))),
    "probe3+prompt": Estimator("probe3+prompt", ((3, 12), (8, 30)), probe_steps=3, prompt_weight=0.25),
}
TUNED_ESTIMATOR = "prompt"  # chosen on val (benchmarks/README.md, "Complexity-adaptive steps")
# reuse rules at REFERENCE_STEPS steps: (label, threshold, max_reused_in_row, calibrated)
REUSE_CANDIDATES = (("current", 0.3, 1, False), ("calibrated", 0.2, 3, True), ("calibrated", 0.4, 3, True))


@dataclass
class Run:
    sampler: str
    setting: str
    calls: list[float]                  # model calls per scene
    passed: list[bool]
    seconds: float                      # CPU seconds per image of the renders

    @property
    def mean_calls(self) -> float:
        return sum(self.calls) / len(self.calls)

    @property
    def accuracy(self) -> float:
        return sum(self.passed) / len(self.passed)

    @property
    def stderr(self) -> float:
        p, n = self.accuracy, len(self.passed)
        return math.sqrt(p * (1 - p) / n)

    def paired(self, reference: "Run") -> tuple[float, float]:
        """(accuracy - reference's, its paired standard error)."""
        d = [float(a) - float(b) for a, b in zip(self.passed, reference.passed)]
        n, mean = len(d), sum(d) / len(d)
        var = sum((x - mean) ** 2 for x in d) / max(1, n - 1)
        return mean, math.sqrt(var / n)

    def category_accuracy(self, specs, categories) -> float:
        hits = [p for p, s in zip(self.passed, specs) if s.category in categories]
        return sum(hits) / max(1, len(hits))

    def category_calls(self, specs, categories) -> float:
        calls = [c for c, s in zip(self.calls, specs) if s.category in categories]
        return sum(calls) / max(1, len(calls))


def mix_specs(split: str, per_category: int, categories=SIMPLE + COMPLEX):
    """The first per_category specs of each category, in the order of `categories` (None: all of the split's)."""
    specs = load_split(split)
    categories = dict.fromkeys(s.category for s in specs) if categories is None else categories
    return [s for c in categories for s in [s for s in specs if s.category == c][:per_category]]


class Bench:
    def __init__(self, pipe: F1Pipeline, specs):
        self.pipe, self.specs = pipe, specs
        self.prompts = [caption(s) for s in specs]
        schedule = pipe.config.schedule
        self.sigma_min, self.sigma_max, self.rho = schedule.sigma_min, schedule.sigma_max, schedule.rho

    def render_groups(self, groups, sampler="dpmpp_2m", decode=True):
        """groups: [(scene indices, sigmas)]; returns (outputs in scene order, seconds)."""
        out = [None] * len(self.specs)
        start = time.process_time()
        for indices, sigmas in groups:
            for b in range(0, len(indices), BATCH):
                chunk = indices[b:b + BATCH]
                result = self.pipe([self.prompts[i] for i in chunk], seed=chunk, sigmas=sigmas, cfg=CFG,
                                   sampler=sampler, decode=decode)
                for i, image in zip(chunk, result):
                    out[i] = image
        return torch.stack(out), time.process_time() - start

    def judged(self, sampler_name, setting, images, seconds, calls) -> Run:
        report = judge(images, self.specs)
        run = Run(sampler_name, setting, calls, [i.score.passed for i in report.items], seconds / len(self.specs))
        print(f"  {sampler_name:10s} {setting:28s} calls {run.mean_calls:5.1f}  acc {run.accuracy:.3f}  "
              f"{run.seconds:.3f} CPU s/image", flush=True)
        return run

    def karras(self, steps: int):
        return schedules.karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)

    def fixed(self, steps: int) -> Run:
        images, seconds = self.render_groups([(list(range(len(self.specs))), self.karras(steps))])
        return self.judged("fixed", f"{steps} steps", images, seconds, [steps] * len(self.specs))

    def complexities(self, estimator: Estimator):
        """(complexity per scene, seconds spent measuring it)."""
        prompt = [schedules.prompt_complexity(p) for p in self.prompts]
        if not estimator.probe_steps:
            return prompt, 0.0
        sigmas = schedules.probe_sigmas(estimator.probe_steps, self.sigma_min, self.sigma_max)
        preview, seconds = self.render_groups([(list(range(len(self.specs))), sigmas)], decode=False)
        image = schedules.image_complexity(preview).tolist()
        w = estimator.prompt_weight
        return [(1 - w) * i + w * p for i, p in zip(image, prompt)], seconds

    def adaptive(self, estimator: Estimator, min_steps: int, max_steps: int, measured) -> Run:
        complexity, probe_seconds = measured
        groups = {}
        for i, c in enumerate(complexity):
            sigmas, decision = schedules.adaptive_sigmas(c, self.sigma_min, self.sigma_max, min_steps, max_steps,
                                                         rho=self.rho)
            groups.setdefault((decision.steps, decision.rho), (sigmas, []))[1].append(i)
        images, seconds = self.render_groups([(indices, sigmas) for sigmas, indices in groups.values()])
        steps = {i: key[0] for key, (_, indices) in groups.items() for i in indices}
        calls = [estimator.probe_steps + steps[i] for i in range(len(self.specs))]
        return self.judged("adaptive", f"{estimator.name} {min_steps}-{max_steps}", images,
                           seconds + probe_seconds, calls)

    def reuse(self, label, threshold, cap, calibration) -> Run:
        stats, real = {}, [0] * len(self.specs)
        rule = sampling.with_reuse(sampling.sample_dpmpp_2m, threshold, stats, cap, calibration)

        def sampler(*args, **kwargs):  # calls are counted per batch: every scene in it shares the decision
            out = rule(*args, **kwargs)
            sampler.real.append(stats["real_calls"])
            return out

        sampler.real = []
        everything = list(range(len(self.specs)))
        images, seconds = self.render_groups([(everything, self.karras(REFERENCE_STEPS))], sampler=sampler)
        for b, calls in zip(range(0, len(everything), BATCH), sampler.real):
            real[b:b + BATCH] = [calls] * len(everything[b:b + BATCH])
        return self.judged(f"reuse {label}", f"thr {threshold:g}, cap {cap}", images, seconds, real)


def calibrate(pipe: F1Pipeline) -> sampling.ReuseCalibration:
    """The reuse calibration of this checkpoint, fitted on REFERENCE_STEPS-step val trajectories (never test)."""
    bench = Bench(pipe, mix_specs("val", CALIBRATION_SCENES))
    traces = []

    def traced(model, x, sigmas, **kwargs):
        traces.append(sampling.ChangeTrace(model))
        return sampling.sample_dpmpp_2m(traces[-1], x, sigmas, **kwargs)

    bench.render_groups([(list(range(len(bench.specs))), bench.karras(REFERENCE_STEPS))], sampler=traced,
                        decode=False)
    return sampling.ReuseCalibration.fit([p for t in traces for p in t.pairs])


def print_calibration(calibration: sampling.ReuseCalibration):
    print(f"reuse calibration (val, {REFERENCE_STEPS} steps): output change = polynomial "
          f"{tuple(round(c, 4) for c in calibration.coefficients)} of the input change", flush=True)


def fewest_calls_at(runs, target: float):
    """The run with the fewest mean calls whose accuracy is >= target, or None."""
    good = [r for r in runs if r.accuracy >= target - 1e-9]
    return min(good, key=lambda r: r.mean_calls) if good else None


def table(runs, reference: Run, specs) -> str:
    lines = ["| sampler | setting | calls / image (simple, complex) | CPU s / image | speed-up | accuracy ± SE | "
             f"Δ vs fixed {REFERENCE_STEPS} ± paired SE | simple | complex |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        delta, se = r.paired(reference)
        lines.append(f"| {r.sampler} | {r.setting} | {r.mean_calls:.1f} ({r.category_calls(specs, SIMPLE):.1f}, "
                     f"{r.category_calls(specs, COMPLEX):.1f}) | {r.seconds:.3f} | {reference.seconds / r.seconds:.2f}× | "
                     f"{r.accuracy:.3f} ± {r.stderr:.3f} | {delta:+.3f} ± {se:.3f} | "
                     f"{r.category_accuracy(specs, SIMPLE):.3f} | {r.category_accuracy(specs, COMPLEX):.3f} |")
    return "\n".join(lines)


def chart(runs, target: float, path: Path, title: str):
    fig, ax = figure((900, 520))
    for index, sampler_name in enumerate(dict.fromkeys(r.sampler for r in runs)):
        for series in dict.fromkeys(r.setting.split(" ")[0] if r.sampler == "adaptive" else ""
                                    for r in runs if r.sampler == sampler_name):
            points = sorted((r for r in runs if r.sampler == sampler_name
                             and (r.sampler != "adaptive" or r.setting.split(" ")[0] == series)),
                            key=lambda r: r.mean_calls)
            ax.errorbar([r.mean_calls for r in points], [r.accuracy for r in points],
                        yerr=[r.stderr for r in points], marker="o", ms=4, capsize=2, lw=1.5,
                        label=f"{sampler_name} {series}".strip())
    ax.axhline(target, color="grey", ls=":", lw=1, label=f"fixed {REFERENCE_STEPS} steps - 1 point")
    return save_accuracy_chart(fig, ax, "model calls per image (guided evaluations)", title, path)


def save_accuracy_chart(fig, ax, xlabel: str, title: str, path: Path) -> Path:
    """Label a judge-accuracy chart (also benchmarks/guidance.py's) and save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("judge accuracy (± SE)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default=str(SHIPPED))
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--scenes", type=int, default=40, help="scenes per category (5 categories)")
    parser.add_argument("--estimator", choices=list(ESTIMATORS), default=TUNED_ESTIMATOR,
                        help="the estimator of the last line")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chart", default=None, help="where to save the chart (default benchmarks/adaptive-SPLIT.png)")
    parser.add_argument("--calibration-only", action="store_true",
                        help="print the reuse calibration and stop (for f1core.sampling's SHIPPED_REUSE_CALIBRATION "
                             "when the shipped default changes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    pipe = F1Pipeline.from_file(args.checkpoint)
    if args.calibration_only:
        print_calibration(calibrate(pipe))
        return 0
    specs = mix_specs(args.split, args.scenes)
    bench = Bench(pipe, specs)
    print(f"{Path(args.checkpoint).name}, {args.split} split: {len(specs)} scenes "
          f"({args.scenes} per category of {', '.join(SIMPLE + COMPLEX)})", flush=True)

    fixed = {steps: bench.fixed(steps) for steps in FIXED_STEPS}
    reference = fixed[REFERENCE_STEPS]
    target = reference.accuracy - TOLERANCE
    runs = list(fixed.values())

    estimators = sorted(ESTIMATORS.values(), key=lambda e: e.name != args.estimator)  # the chosen one first
    adaptive = []
    for estimator in estimators:
        measured = bench.complexities(estimator)
        adaptive += [bench.adaptive(estimator, lo, hi, measured) for lo, hi in estimator.policies]
    runs += adaptive

    calibration = calibrate(pipe)
    print_calibration(calibration)
    reuse = [bench.reuse(label, thr, cap, replace(calibration, max_reused_in_row=cap) if calibrated else None)
             for label, thr, cap, calibrated in REUSE_CANDIDATES]
    runs += reuse

    print(f"\n{table(runs, reference, specs)}\n")
    fixed_best = fewest_calls_at(fixed.values(), target)
    print(f"target: accuracy >= {target:.3f} (fixed {REFERENCE_STEPS} steps {reference.accuracy:.3f} ± "
          f"{reference.stderr:.3f}, minus {TOLERANCE:g})")
    print(f"fixed dpmpp_2m at equal accuracy: {fixed_best.setting}, {fixed_best.mean_calls:.1f} calls")
    for estimator in estimators:
        best = fewest_calls_at([r for r in adaptive if r.setting.startswith(estimator.name + " ")], target)
        ratio = None if best is None else best.mean_calls / fixed_best.mean_calls
        text = "never reaches it" if best is None else (f"{best.setting}, {best.mean_calls:.1f} calls, "
                                                      f"ratio {ratio:.3f}")
        print(f"adaptive {estimator.name} at equal accuracy: {text}")
    for r in reuse:
        delta, se = r.paired(reference)
        print(f"{r.sampler} {r.setting}: {reference.seconds / r.seconds:.2f}x time (CPU), "
              f"{REFERENCE_STEPS / r.mean_calls:.2f}x calls, accuracy {delta:+.3f} ± {se:.3f} (paired SE)")
    path = Path(args.chart or ROOT / "benchmarks" / f"adaptive-{args.split}.png")
    chart(runs, target, path, f"{Path(args.checkpoint).name}, {args.split} mix ({len(specs)} scenes): "
                              "model calls against judge accuracy")
    print(f"chart: {path}")
    print(f"total: {time.perf_counter() - started:.0f} s wall, {time.process_time():.0f} s CPU")
    best = fewest_calls_at([r for r in adaptive if r.setting.startswith(estimators[0].name + " ")], target)
    ratio = None if best is None else round(best.mean_calls / fixed_best.mean_calls, 3)
    print(f"calls_ratio_at_equal_accuracy: {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
