# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Speed and peak memory of the package's layers and backbones against their
baselines, every figure measured side by side in one run.

What is compared (candidate / baseline):

* **DO-Conv** at the ResNet-50 3x3 stage shapes: our ``DOConv`` (unfolded;
  composed kernel cached when no gradient is needed) / ``nn.Conv2d``, and /
  a re-implementation of the reference's per-forward composition (an
  ``einsum`` of ``D`` plus a frozen identity *Parameter* with ``W`` at every
  forward, train and eval; yangyanli/DO-Conv, groups = 1 only); the folded
  layer (``switch_to_deploy``) too.
* **MixConv** at MixNet-S shapes: ``MixConv`` / ``timm.layers.MixedConv2d``
  (depthwise, same kernels and split), and our fused / split paths.
* **BSConv-U** at MobileNetV1 shapes: ``BSConvU`` / ``bsconv.pytorch.BSConvU``.
* **Backbones**: mmpretrain ResNet-50 stock / DO-Conv unfolded / folded;
  our MixNet-S in deploy form (``switch_to_deploy`` + ``mmcv.cnn.fuse_conv_bn``)
  / timm ``mixnet_s`` in eval (same weights, checked equal), each in its faster
  memory format; MobileNetV1 DSC / BSConv-U; channels-last / NCHW for each.

Modes: ``train`` (train mode, forward + backward), ``forward`` (train mode,
forward with autograd recording), ``eval`` (eval mode under ``no_grad``) and
``deploy`` (the deploy form, eval mode under ``no_grad``).

Method. All candidates of a case get the same input, the same warm-up (each
is run ``warmup`` times, round-robin) and are then timed interleaved for
``repeats`` rounds, the order rotating by one each round (A B C, B C A, C A B,
...; for two candidates A B, B A, A B, ...) so that no candidate always runs
first or right after the same neighbour; one sample is the mean of ``inner``
back-to-back calls (``inner`` chosen from the warm-up so that a sample lasts at
least ``min_sample_ms``), with ``torch.cuda.synchronize()`` around every
sample on CUDA and the garbage collector off. A case reports each candidate's
median sample, and each ratio as the **median of the per-round ratios**
(candidate sample / baseline sample of the same round), which cancels most of
the load drift of a shared machine (the ratio of the medians is stored too).
A headline ratio that spans several shapes is the geometric mean of the
per-shape ratios. Outputs of candidate and baseline are checked equal where
they compute the same function (``max_abs_diff`` in the JSON).

Peak memory, measured in a separate untimed call: on CUDA
``torch.cuda.max_memory_allocated()`` minus the allocation before the call;
on the CPU the allocation events of ``torch.profiler`` (``profile_memory``),
summed in time order and the maximum taken, i.e. the peak of the bytes
allocated by the call through PyTorch's CPU allocator above the level before
it (oneDNN's internal scratch buffers are not included).

Shared machines. With two or more threads, OpenMP's default spin-waiting makes
every op pay for other processes on the same cores (a 10x slowdown of small
ops was measured here under load); the tool warns when the load average
exceeds the core count. Run with ``OMP_WAIT_POLICY=PASSIVE`` or
``--threads 1`` there; the setting is recorded in ``machine``. Note that with
one thread PyTorch runs unstrided 1x1 convs (batch < 16) through its own
im2col path instead of oneDNN, which also splits grouped 1x1 convs per group.
By default the tool also makes glibc keep freed memory (``--malloc``; see
:func:`keep_freed_memory`): without it, page faults on freshly mapped
multi-MiB tensors swung the ratio of two identical layers between 0.8 and 1.2
here; with it, 0.99-1.01. Both settings apply to every candidate alike.

Example:
    python tools/analysis/benchmark.py --quick --out work_dirs/bench/quick.json
    python tools/analysis/benchmark.py --device cuda --out work_dirs/bench/cuda.json

Writes ``FILE.json``, ``FILE.md`` (tables) and ``FILE.png`` (chart), each
atomically.
"""
import argparse
import copy
import ctypes
import ctypes.util
import gc
import json
import math
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# the profiler behind the CPU peak-memory figures (kineto) logs two lines per use at its default
# level; read when kineto initialises, so set before torch is imported
os.environ.setdefault('KINETO_LOG_LEVEL', '6')

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# key -> (target, what it measures); lower is better for every key.
TARGETS = {
    'doconv_eval_over_conv': 1.02,
    'doconv_train_over_conv': 1.05,
    'doconv_train_over_reference': 1.02,
    'folded_over_plain': 1.02,
    'mixconv_over_timm': 1.0,
    'mixnet_s_over_timm': 0.85,
    'bsconvu_over_reference': 1.02,
}
DESCRIPTIONS = {
    'doconv_eval_over_conv': 'DOConv (unfolded) / nn.Conv2d, eval no_grad, ResNet-50 3x3 shapes',
    'doconv_train_over_conv': 'DOConv / nn.Conv2d, forward+backward, ResNet-50 3x3 shapes',
    'doconv_train_over_reference': 'DOConv / reference einsum DO-Conv, forward+backward',
    'folded_over_plain': 'folded DO-Conv ResNet-50 / stock ResNet-50, inference',
    'mixconv_over_timm': 'MixConv / timm MixedConv2d, forward+backward, MixNet-S shapes',
    'mixnet_s_over_timm': 'MixNet-S deploy / timm mixnet_s eval, inference, best format each',
    'bsconvu_over_reference': 'BSConvU / bsconv.pytorch.BSConvU, forward+backward',
}

# key -> (family, mode, ratio) of the cases it aggregates (geometric mean).
KEY_SOURCES = {
    'doconv_eval_over_conv': ('doconv', 'eval', 'doconv/conv'),
    'doconv_train_over_conv': ('doconv', 'train', 'doconv/conv'),
    'doconv_train_over_reference': ('doconv', 'train', 'doconv/reference'),
    'folded_over_plain': ('resnet50', 'eval', 'folded/stock'),
    'mixconv_over_timm': ('mixconv', 'train', 'mixconv/timm'),
    'mixnet_s_over_timm': ('mixnet_s', 'deploy', 'ours best/timm best'),
    'bsconvu_over_reference': ('bsconvu', 'train', 'bsconvu/reference'),
}

# Run profiles. ``subset``: which shapes of the lists below run ('smoke': the
# first one, scaled down by ``layer_scale``; 'quick': those marked quick; 'full':
# all). ``memory_modes``: the modes whose peak memory is measured. ``doconv_batch``
# is 32 in both real profiles: ResNet-50's per-GPU training batch (mmpretrain's
# resnet50_8xb32), the smallest number of positions per 3x3 conv of any realistic
# training run (detection at 1333x800 with 2 images has more); the composition's
# fixed cost weighs about 4x more at batch 8 (see the README's figures).
# ``resnet_min_repeats``: batch-1 ResNet-50 inference swings by +-15% from call
# to call on a shared 2-core VM, and ``folded_over_plain`` compares two networks
# of identical shapes, so that suite gets more rounds.
PROFILES = {
    'smoke': dict(layer_batch=1, doconv_batch=1, backbone_batch=1, mixnet_batch=1, resolution=64,
                  layer_scale=4, subset='smoke', warmup=1, min_repeats=3, max_repeats=3,
                  case_budget_s=0.0, min_sample_ms=0.0, backbone_train=True,
                  layer_modes=('train', 'forward', 'eval'),
                  memory_modes=('train', 'eval', 'deploy')),
    'quick': dict(layer_batch=8, doconv_batch=32, backbone_batch=1, mixnet_batch=4, resolution=224,
                  layer_scale=1, subset='quick', warmup=2, min_repeats=11, max_repeats=21,
                  resnet_min_repeats=41,
                  case_budget_s=0.8, min_sample_ms=10.0, backbone_train=False,
                  layer_modes=('train', 'eval'), memory_modes=('train', 'eval', 'deploy')),
    'full': dict(layer_batch=32, doconv_batch=32, backbone_batch=8, mixnet_batch=16, resolution=224,
                 layer_scale=1, subset='full', warmup=3, min_repeats=15, max_repeats=31,
                 case_budget_s=4.0, min_sample_ms=50.0, backbone_train=True,
                 layer_modes=('train', 'forward', 'eval'),
                 memory_modes=('train', 'forward', 'eval', 'deploy')),
}

# ResNet-50 3x3 convs (input of each stage's 3x3 conv): channels, spatial size, quick.
DOCONV_SHAPES = [(64, 56, True), (128, 28, True), (256, 14, True), (512, 7, True)]
# MixConvs: channels, input size, kernels, stride, quick. The first three are
# the brief's examples; the rest are MixNet-S's other mixed depthwise convs.
MIXCONV_SHAPES = [
    (240, 28, (3, 5, 7), 1, True),
    (240, 28, (3, 5, 7), 2, True),  # MixNet-S stage 4, first block
    (480, 14, (3, 5, 7, 9), 1, True),
    (360, 14, (3, 5, 7, 9), 1, True),  # stage 5, repeats 2-3
    (480, 14, (3, 5), 1, True),  # stage 4, repeats 2-3
    (1200, 7, (3, 5, 7, 9), 1, True),  # stage 6, repeats 2-3
    (144, 56, (3, 5, 7), 2, False),  # stage 3, first block
    (240, 28, (3, 5), 1, False),  # stage 3, repeats 2-4
    (480, 14, (3, 5, 7), 1, False),  # stage 5, first block
    (720, 14, (3, 5, 7, 9, 11), 2, False),  # stage 6, first block
]
# MobileNetV1 blocks as BSConv-U: in, out, input size, stride, quick.
BSCONV_SHAPES = [
    (32, 64, 112, 1, True),
    (64, 128, 112, 2, False),
    (128, 128, 56, 1, True),
    (256, 256, 28, 1, True),
    (512, 512, 14, 1, True),
    (512, 1024, 14, 2, False),
    (1024, 1024, 7, 1, False),
]


def log(msg: str) -> None:
    print(f'[benchmark] {msg}', file=sys.stderr, flush=True)


# --------------------------------------------------------------- primitives
def keep_freed_memory() -> bool:
    """glibc only: keeps freed memory in the process (``mallopt``: mmap
    threshold at its 32 MiB maximum, trim threshold 1 GiB).

    By default glibc hands large freed blocks back to the kernel, so the next
    allocation of a multi-MiB tensor page-faults and zeroes fresh pages; on a
    VM that costs milliseconds per tensor and makes identical calls bimodal
    (43 vs 60 ms measured for the same layer here). Applied process-wide, i.e.
    equally to every candidate. Returns whether it took effect.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20) == 1
                and mallopt(m_trim_threshold, 1 << 30) == 1)



def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _sample(fn: Callable[[], None], inner: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / inner


class Step:
    """A callable benchmark step plus ``clear()`` (drops gradients, so that a
    memory measurement starts from the same state as a timed call)."""

    def __init__(self, fn: Callable[[], None], params: Sequence[torch.Tensor] = ()) -> None:
        self.fn = fn
        self.params = list(params)

    def clear(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self) -> None:
        self.clear()
        self.fn()


def _outputs(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [o for o in out if isinstance(o, torch.Tensor)]


def make_step(module: nn.Module, x: torch.Tensor, mode: str) -> Step:
    """``train``: forward + backward in train mode (fixed random output
    gradient); ``forward``: train-mode forward with autograd recording;
    ``eval`` / ``deploy``: eval-mode forward under ``no_grad``."""
    if mode in ('eval', 'deploy'):
        module.eval()

        def run():
            with torch.no_grad():
                module(x)

        return Step(run)
    module.train()
    xg = x.detach().clone().requires_grad_(True)
    if mode == 'forward':
        return Step(lambda: module(xg), [xg])
    with torch.no_grad():
        outs = _outputs(module(xg))
    grads = [torch.randn_like(o) for o in outs]
    params = [p for p in module.parameters() if p.requires_grad] + [xg]

    def run():
        torch.autograd.backward(_outputs(module(xg)), grads)

    return Step(run, params)


def peak_memory_mb(step: Step, device: torch.device) -> Optional[float]:
    """Peak bytes allocated by one call above the level before it (MiB)."""
    step.clear()
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step.fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        step.clear()
        return peak / 2**20
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step.fn()
        allocs = []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            ev = stack.pop()
            if ev.tag == _EventType.Allocation:
                allocs.append((ev.start_time_ns, ev.extra_fields.alloc_size))
            stack.extend(ev.children)
    except Exception as err:  # pragma: no cover - depends on the profiler build
        log(f'peak memory unavailable: {err!r}')
        return None
    finally:
        step.clear()
    current = peak = 0
    for _, size in sorted(allocs):
        current += size
        peak = max(peak, current)
    return peak / 2**20


def interleaved(steps: Dict[str, Step], pairs: Dict[str, Tuple[str, str]], cfg: dict,
                device: torch.device, memory: bool = False) -> dict:
    """Times ``steps`` interleaved (order rotating every round) after an
    equal warm-up.

    Args:
        steps (dict[str, Step]): Candidates by name.
        pairs (dict[str, tuple[str, str]]): Ratio name -> (candidate,
            baseline).
        cfg (dict): The run profile.
        device (torch.device): Where the steps run.
        memory (bool): Also measure each step's peak memory.

    Returns:
        dict: ``results`` (per step: ``median_ms``, ``min_ms``, ``iqr_ms``,
        ``raw_ms``, ``peak_mem_mb``), ``ratios`` (median of the per-round
        ratios: the figure reported), ``ratios_of_medians`` and
        ``ratios_of_minima`` (for reference), ``pairs``, ``repeats``,
        ``inner``.
    """
    names = list(steps)
    for _ in range(cfg['warmup']):
        for n in names:
            steps[n]()
    # one more round, timed, to size the samples (it counts as warm-up for all)
    est = max(_sample(steps[n], 1, device) for n in names)
    inner = max(1, min(50, math.ceil(cfg['min_sample_ms'] / 1000 / max(est, 1e-6))))
    per_round = len(names) * inner * est
    repeats = int(cfg['case_budget_s'] / max(per_round, 1e-9))
    repeats = max(cfg['min_repeats'], min(cfg['max_repeats'], repeats))
    raw = {n: [] for n in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for r in range(repeats):
            k = r % len(names)
            for n in names[k:] + names[:k]:  # rotate the order every round
                raw[n].append(_sample(steps[n], inner, device))
    finally:
        if gc_was_enabled:
            gc.enable()
    results = {}
    for n in names:
        ts = sorted(raw[n])
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        results[n] = dict(median_ms=statistics.median(ts) * 1e3, min_ms=ts[0] * 1e3,
                          iqr_ms=(q[2] - q[0]) * 1e3, raw_ms=[t * 1e3 for t in raw[n]])
        if memory:
            results[n]['peak_mem_mb'] = peak_memory_mb(steps[n], device)
    ratios, ratios_of_medians, ratios_of_minima = {}, {}, {}
    for key, (cand, base) in pairs.items():
        ratios[key] = statistics.median(a / b for a, b in zip(raw[cand], raw[base]))
        ratios_of_medians[key] = results[cand]['median_ms'] / results[base]['median_ms']
        ratios_of_minima[key] = results[cand]['min_ms'] / results[base]['min_ms']
    return dict(results=results, ratios=ratios, ratios_of_medians=ratios_of_medians,
                ratios_of_minima=ratios_of_minima,
                pairs={k: list(v) for k, v in pairs.items()}, repeats=repeats, inner=inner)


def geomean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def headline_ratios(cases: List[dict]) -> Tuple[Dict[str, float], Dict[str, dict]]:
    """The headline keys (geometric means over their cases) and, per key,
    the per-case ratios and the same aggregate of the ratios of minima."""
    keys, details = {}, {}
    for key, (family, mode, pair) in KEY_SOURCES.items():
        chosen = [c for c in cases if c['family'] == family and c['mode'] == mode
                  and pair in c['ratios']]
        if not chosen:
            continue
        keys[key] = geomean([c['ratios'][pair] for c in chosen])
        details[key] = dict(
            pair=pair, mode=mode,
            per_case={c['case']: round(c['ratios'][pair], 4) for c in chosen},
            of_minima=geomean([c['ratios_of_minima'][pair] for c in chosen]),
            of_medians=geomean([c['ratios_of_medians'][pair] for c in chosen]))
    return keys, details


def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ya, yb = _outputs(a(x)), _outputs(b(x))
    return max(float((p - q).abs().max()) for p, q in zip(ya, yb))


# ----------------------------------------------------------- reference layers
class ReferenceDOConv(nn.Module):
    """DO-Conv as the reference implementation evaluates it (groups = 1):
    ``D`` is stored relative to a frozen identity *Parameter* ``d_diag``
    (``(in, kh*kw, D_mul)``) and the kernel is composed with
    ``einsum('ims,ois->oim', D + d_diag, W)`` at every forward, in training
    and in evaluation alike. Written from the paper's kernel composition."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = False) -> None:
        super().__init__()
        self.out_channels, self.in_channels = out_channels, in_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        taps = kernel_size * kernel_size
        self.W = nn.Parameter(torch.randn(out_channels, in_channels, taps) * 0.05)
        self.D = nn.Parameter(torch.zeros(in_channels, taps, taps))
        eye = torch.eye(taps).reshape(1, taps, taps).repeat(in_channels, 1, 1)
        self.d_diag = nn.Parameter(eye, requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        D = self.D + self.d_diag
        kernel = torch.einsum('ims,ois->oim', D, self.W)
        kernel = kernel.reshape(self.out_channels, self.in_channels, self.kernel_size,
                                self.kernel_size)
        return F.conv2d(x, kernel, self.bias, self.stride, self.padding)


# ------------------------------------------------------------------- suites
def _scaled(c: int, s: int, cfg: dict) -> Tuple[int, int]:
    k = cfg['layer_scale']
    return max(8, c // k), max(4, s // k)


def _cases(shapes: list, cfg: dict) -> list:
    """The shapes of the profile's subset, without the trailing quick flag."""
    if cfg['subset'] == 'smoke':
        return [shapes[0][:-1]]
    return [s[:-1] for s in shapes if cfg['subset'] == 'full' or s[-1]]


def bench_doconv(cfg: dict, device: torch.device) -> dict:
    from mm_efficientconv.layers.doconv import DOConv
    from mm_efficientconv.layers.deploy import switch_to_deploy
    cases = []
    for c, s in _cases(DOCONV_SHAPES, cfg):
        c, s = _scaled(c, s, cfg)
        x = torch.randn(cfg['doconv_batch'], c, s, s, device=device)
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
        ours = DOConv(c, c, 3, padding=1, bias=False).to(device)
        with torch.no_grad():
            ours.D.normal_(0, 0.05)  # a trained-looking D' (timing does not depend on it)
        ref = ReferenceDOConv(c, c, 3, padding=1).to(device)
        with torch.no_grad():
            ref.W.copy_(ours.W)
            ref.D.copy_(ours.D)  # reference D + d_diag == our D' + I
        folded = switch_to_deploy(copy.deepcopy(ours).eval())
        name = f'conv3x3 {c}ch {s}x{s}'
        shape = [cfg['doconv_batch'], c, s, s]
        check = dict(reference=max_abs_diff(ours.eval(), ref.eval(), x),
                     folded=max_abs_diff(ours.eval(), folded, x))
        for mode in cfg['layer_modes']:
            steps = {'conv': make_step(conv, x, mode), 'doconv': make_step(ours, x, mode),
                     'reference': make_step(ref, x, mode)}
            pairs = {'doconv/conv': ('doconv', 'conv'), 'doconv/reference': ('doconv', 'reference'),
                     'reference/conv': ('reference', 'conv')}
            if mode == 'eval':
                steps['folded'] = make_step(folded, x, 'deploy')
                pairs['folded/conv'] = ('folded', 'conv')
            res = interleaved(steps, pairs, cfg, device,
                              mode in cfg['memory_modes'])
            cases.append(dict(family='doconv', case=name, shape=shape, mode=mode,
                              baseline='conv', max_abs_diff=check, **res))
            log(f'doconv {name} {mode}: ' + _fmt_ratios(res['ratios']))
    return dict(cases=cases)


def _fmt_ratios(ratios: dict) -> str:
    return ', '.join(f'{k}={v:.3f}' for k, v in ratios.items())


def bench_mixconv(cfg: dict, device: torch.device) -> dict:
    from timm.layers import MixedConv2d

    from mm_efficientconv.layers.mixconv import MixConv
    cases, fused_split = [], []
    for c, s, kernels, stride in _cases(MIXCONV_SHAPES, cfg):
        c, s = _scaled(c, s, cfg)
        c = max(c, 2 * len(kernels))
        x = torch.randn(cfg['layer_batch'], c, s, s, device=device)
        k = max(kernels)
        timm_conv = MixedConv2d(c, c, list(kernels), stride=stride, depthwise=True).to(device)
        ours = MixConv(c, c, k, stride=stride, padding=k // 2, groups=c, bias=False,
                       kernel_sizes=kernels).to(device)
        with torch.no_grad():
            for kernel, conv in zip(ours.kernels, timm_conv.values()):
                kernel.copy_(conv.weight)
        fused = copy.deepcopy(ours)
        fused.fuse_mode = 'always'
        split = copy.deepcopy(ours)
        split.fuse_mode = 'never'
        name = f'mixconv{kernels} {c}ch {s}x{s} s{stride}'
        shape = [cfg['layer_batch'], c, s, s]
        check = dict(timm=max_abs_diff(ours.eval(), timm_conv.eval(), x),
                     fused=max_abs_diff(fused.eval(), split.eval(), x))
        for mode in cfg['layer_modes']:
            steps = {'timm': make_step(timm_conv, x, mode), 'mixconv': make_step(ours, x, mode)}
            res = interleaved(steps, {'mixconv/timm': ('mixconv', 'timm')}, cfg, device,
                              mode in cfg['memory_modes'])
            cases.append(dict(family='mixconv', case=name, shape=shape, mode=mode,
                              baseline='timm', max_abs_diff=check, **res))
            log(f'mixconv {name} {mode}: ' + _fmt_ratios(res['ratios']))
        for mode in ('train', 'eval'):
            steps = {'split': make_step(split, x, mode), 'fused': make_step(fused, x, mode)}
            res = interleaved(steps, {'fused/split': ('fused', 'split')}, cfg, device, False)
            fused_split.append(dict(family='mixconv_fused_vs_split', case=name, shape=shape,
                                    mode=mode, baseline='split', **res))
            log(f'mixconv {name} fused-vs-split {mode}: ' + _fmt_ratios(res['ratios']))
    return dict(cases=cases, fused_vs_split=fused_split)


def bench_bsconv(cfg: dict, device: torch.device) -> dict:
    from bsconv.pytorch import BSConvU as RefBSConvU

    from mm_efficientconv.layers.bsconv import BSConvU
    cases = []
    for cin, cout, s, stride in _cases(BSCONV_SHAPES, cfg):
        cin, s = _scaled(cin, s, cfg)
        cout, _ = _scaled(cout, s, cfg)
        x = torch.randn(cfg['layer_batch'], cin, s, s, device=device)
        ref = RefBSConvU(cin, cout, 3, stride=stride, padding=1, bias=False).to(device)
        ours = BSConvU(cin, cout, 3, stride=stride, padding=1, bias=False).to(device)
        with torch.no_grad():
            ours.pw.weight.copy_(ref.pw.weight)
            ours.dw.weight.copy_(ref.dw.weight)
        name = f'bsconvu {cin}->{cout} {s}x{s} s{stride}'
        shape = [cfg['layer_batch'], cin, s, s]
        check = dict(reference=max_abs_diff(ours.eval(), ref.eval(), x))
        for mode in cfg['layer_modes']:
            steps = {'reference': make_step(ref, x, mode), 'bsconvu': make_step(ours, x, mode)}
            res = interleaved(steps, {'bsconvu/reference': ('bsconvu', 'reference')}, cfg,
                              device, mode in cfg['memory_modes'])
            cases.append(dict(family='bsconvu', case=name, shape=shape, mode=mode,
                              baseline='reference', max_abs_diff=check, **res))
            log(f'bsconvu {name} {mode}: ' + _fmt_ratios(res['ratios']))
    return dict(cases=cases)


def _eval(model: nn.Module) -> nn.Module:
    """``model.eval()`` returning the model (mmpretrain's backbones return
    None from ``train()``)."""
    model.eval()
    return model


def _deploy_fused(model: nn.Module) -> nn.Module:
    """Our deploy form: ``switch_to_deploy`` then conv+BN fusion."""
    from mmcv.cnn import fuse_conv_bn

    from mm_efficientconv.layers.deploy import switch_to_deploy
    model = switch_to_deploy(_eval(copy.deepcopy(model)))
    return _eval(fuse_conv_bn(model))


def _format_variants(models: Dict[str, nn.Module], x: torch.Tensor) -> Tuple[dict, dict]:
    """Each model in NCHW and in channels-last (deep copies)."""
    variants, inputs = {}, {}
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for name, model in models.items():
        variants[f'{name}@nchw'], inputs[f'{name}@nchw'] = model, x
        variants[f'{name}@cl'] = copy.deepcopy(model).to(memory_format=torch.channels_last)
        inputs[f'{name}@cl'] = x_cl
    return variants, inputs


def bench_resnet(cfg: dict, device: torch.device) -> dict:
    from mmpretrain.models import ResNet

    import mm_efficientconv.layers.doconv  # noqa: F401  (registers DOConv)
    from mm_efficientconv.layers.deploy import switch_to_deploy
    rounds = max(cfg['min_repeats'], cfg.get('resnet_min_repeats', 0))
    cfg = dict(cfg, min_repeats=rounds, max_repeats=max(cfg['max_repeats'], rounds))
    res_ = cfg['resolution']
    x = torch.randn(cfg['backbone_batch'], 3, res_, res_, device=device)
    stock = _eval(ResNet(depth=50).to(device))
    unfolded = ResNet(depth=50, conv_cfg=dict(type='DOConv')).to(device)
    unfolded.load_state_dict(stock.state_dict())  # plain weights -> W, D' = 0: same function
    unfolded.eval()
    folded = _eval(switch_to_deploy(copy.deepcopy(unfolded)))
    check = dict(unfolded=max_abs_diff(unfolded, stock, x), folded=max_abs_diff(folded, stock, x))
    shape = list(x.shape)
    cases, formats = [], []
    variants, inputs = _format_variants(dict(stock=stock, folded=folded), x)
    # stock and folded next to each other: adjacent in 4 of the 5 rotations (less drift
    # between the two samples of a round)
    steps = {'stock@nchw': make_step(variants['stock@nchw'], x, 'eval'),
             'folded@nchw': make_step(variants['folded@nchw'], x, 'deploy'),
             'unfolded@nchw': make_step(unfolded, x, 'eval'),
             'stock@cl': make_step(variants['stock@cl'], inputs['stock@cl'], 'eval'),
             'folded@cl': make_step(variants['folded@cl'], inputs['folded@cl'], 'deploy')}
    pairs = {'folded/stock': ('folded@nchw', 'stock@nchw'),
             'unfolded/stock': ('unfolded@nchw', 'stock@nchw'),
             'folded/stock@cl': ('folded@cl', 'stock@cl'),
             'stock cl/nchw': ('stock@cl', 'stock@nchw'),
             'folded cl/nchw': ('folded@cl', 'folded@nchw')}
    res = interleaved(steps, pairs, cfg, device,
                      'eval' in cfg['memory_modes'])
    cases.append(dict(family='resnet50', case='ResNet-50 stock / DO-Conv', shape=shape,
                      mode='eval', baseline='stock@nchw', max_abs_diff=check, **res))
    log('resnet50 eval: ' + _fmt_ratios(res['ratios']))
    for model in ('stock', 'folded'):
        formats.append(dict(model=f'ResNet-50 {model}', mode='eval',
                            cl_over_nchw=res['ratios'][f'{model} cl/nchw'],
                            nchw_ms=res['results'][f'{model}@nchw']['median_ms'],
                            cl_ms=res['results'][f'{model}@cl']['median_ms']))
    if cfg['backbone_train']:
        steps = {'stock': make_step(stock, x, 'train'), 'unfolded': make_step(unfolded, x, 'train')}
        res = interleaved(steps, {'unfolded/stock': ('unfolded', 'stock')}, cfg, device,
                          'train' in cfg['memory_modes'])
        cases.append(dict(family='resnet50', case='ResNet-50 stock / DO-Conv', shape=shape,
                          mode='train', baseline='stock', **res))
        log('resnet50 train: ' + _fmt_ratios(res['ratios']))
    return dict(cases=cases, channels_last=formats)


def bench_mixnet(cfg: dict, device: torch.device) -> dict:
    import timm

    from mm_efficientconv.backbones.mixnet import MixNet, convert_timm_mixnet
    res_ = cfg['resolution']
    x = torch.randn(cfg['mixnet_batch'], 3, res_, res_, device=device)
    timm_model = _eval(timm.create_model('mixnet_s', pretrained=False).to(device))
    with torch.no_grad():  # non-trivial BN statistics, so the check means something
        for m in timm_model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = MixNet('s', norm_cfg=dict(type='BN', eps=1e-5)).to(device)
    state = convert_timm_mixnet(timm_model.state_dict(), backbone_prefix='', head_prefix='fc.')
    state = {k: v for k, v in state.items() if not k.startswith('fc.')}
    ours.load_state_dict(state)
    ours.eval()
    deployed = _deploy_fused(ours)

    class TimmFeatures(nn.Module):

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, inp):
            return self.model.forward_features(inp)

    timm_feat = _eval(TimmFeatures(timm_model))
    check = dict(deploy=max_abs_diff(deployed, timm_feat, x),
                 unfused=max_abs_diff(ours, timm_feat, x))
    variants, inputs = _format_variants(dict(ours=deployed, timm=timm_feat), x)
    steps = {n: make_step(m, inputs[n], 'deploy' if n.startswith('ours') else 'eval')
             for n, m in variants.items()}
    pairs = {'ours/timm@nchw': ('ours@nchw', 'timm@nchw'), 'ours/timm@cl': ('ours@cl', 'timm@cl'),
             'ours cl/nchw': ('ours@cl', 'ours@nchw'), 'timm cl/nchw': ('timm@cl', 'timm@nchw')}
    res = interleaved(steps, pairs, cfg, device,
                      'deploy' in cfg['memory_modes'])
    # the faster memory format of each model (by median), then the paired ratio
    best = {}
    for model in ('ours', 'timm'):
        best[model] = min((f'{model}@nchw', f'{model}@cl'),
                          key=lambda n: res['results'][n]['median_ms'])
    raw = res['results']
    key = statistics.median(a / b for a, b in zip(raw[best['ours']]['raw_ms'],
                                                  raw[best['timm']]['raw_ms']))
    res['ratios']['ours best/timm best'] = key
    res['ratios_of_medians']['ours best/timm best'] = (raw[best['ours']]['median_ms']
                                                       / raw[best['timm']]['median_ms'])
    res['ratios_of_minima']['ours best/timm best'] = (raw[best['ours']]['min_ms']
                                                      / raw[best['timm']]['min_ms'])
    res['pairs']['ours best/timm best'] = [best['ours'], best['timm']]
    res['best_format'] = best
    shape = list(x.shape)
    cases = [dict(family='mixnet_s', case='MixNet-S deploy / timm mixnet_s', shape=shape,
                  mode='deploy', baseline='timm', max_abs_diff=check, **res)]
    log('mixnet_s inference: ' + _fmt_ratios(res['ratios']))
    formats = [dict(model=f'MixNet-S {m}', mode='eval', cl_over_nchw=res['ratios'][f'{m} cl/nchw'],
                    nchw_ms=raw[f'{m}@nchw']['median_ms'], cl_ms=raw[f'{m}@cl']['median_ms'])
               for m in ('ours', 'timm')]
    if cfg['backbone_train']:
        timm_train = TimmFeatures(copy.deepcopy(timm_model))
        ours_train = copy.deepcopy(ours)
        steps = {'timm': make_step(timm_train, x, 'train'),
                 'ours': make_step(ours_train, x, 'train')}
        res = interleaved(steps, {'ours/timm': ('ours', 'timm')}, cfg, device,
                          'train' in cfg['memory_modes'])
        cases.append(dict(family='mixnet_s', case='MixNet-S / timm mixnet_s', shape=shape,
                          mode='train', baseline='timm', **res))
        log('mixnet_s train: ' + _fmt_ratios(res['ratios']))
    return dict(cases=cases, channels_last=formats)


def bench_mobilenet(cfg: dict, device: torch.device) -> dict:
    from mm_efficientconv.backbones.mobilenet_v1 import MobileNetV1
    res_ = cfg['resolution']
    x = torch.randn(cfg['backbone_batch'], 3, res_, res_, device=device)
    dsc = _eval(MobileNetV1(block_type='dsc').to(device))
    bsc = _eval(MobileNetV1(block_type='bsconvu').to(device))
    models = dict(dsc=_deploy_fused(dsc), bsconvu=_deploy_fused(bsc))
    variants, inputs = _format_variants(models, x)
    steps = {n: make_step(m, inputs[n], 'deploy') for n, m in variants.items()}
    pairs = {'bsconvu/dsc@nchw': ('bsconvu@nchw', 'dsc@nchw'),
             'bsconvu/dsc@cl': ('bsconvu@cl', 'dsc@cl'),
             'dsc cl/nchw': ('dsc@cl', 'dsc@nchw'),
             'bsconvu cl/nchw': ('bsconvu@cl', 'bsconvu@nchw')}
    res = interleaved(steps, pairs, cfg, device,
                      'deploy' in cfg['memory_modes'])
    shape = list(x.shape)
    cases = [dict(family='mobilenet_v1', case='MobileNetV1 BSConv-U / DSC (deploy, BN fused)',
                  shape=shape, mode='deploy', baseline='dsc@nchw', **res)]
    log('mobilenet_v1 inference: ' + _fmt_ratios(res['ratios']))
    raw = res['results']
    formats = [dict(model=f'MobileNetV1 {m}', mode='deploy',
                    cl_over_nchw=res['ratios'][f'{m} cl/nchw'],
                    nchw_ms=raw[f'{m}@nchw']['median_ms'], cl_ms=raw[f'{m}@cl']['median_ms'])
               for m in ('dsc', 'bsconvu')]
    if cfg['backbone_train']:
        steps = {'dsc': make_step(dsc, x, 'train'), 'bsconvu': make_step(bsc, x, 'train')}
        res = interleaved(steps, {'bsconvu/dsc': ('bsconvu', 'dsc')}, cfg, device,
                          'train' in cfg['memory_modes'])
        cases.append(dict(family='mobilenet_v1', case='MobileNetV1 BSConv-U / DSC', shape=shape,
                          mode='train', baseline='dsc', **res))
        log('mobilenet_v1 train: ' + _fmt_ratios(res['ratios']))
    return dict(cases=cases, channels_last=formats)


SUITES = dict(doconv=bench_doconv, mixconv=bench_mixconv, bsconvu=bench_bsconv,
              resnet=bench_resnet, mixnet=bench_mixnet, mobilenet=bench_mobilenet)


# ------------------------------------------------------------------ machine
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(cpu=cpu, cpu_count=os.cpu_count(), threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(),
                device=str(device), mkldnn=torch.backends.mkldnn.is_available())
    try:
        info['affinity'] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        pass
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    try:
        import mmcv
        import timm
        info['mmcv'], info['timm'] = mmcv.__version__, timm.__version__
    except ImportError:  # pragma: no cover
        pass
    from mm_efficientconv.layers.doconv_compose import fused_compose_available
    # whether DO-Conv's training-time composition runs the compiled CPU kernel (setup.py builds it)
    info['doconv_fused_compose'] = device.type == 'cpu' and fused_compose_available()
    info['env'] = {k: os.environ[k] for k in ('MMEFF_WITH_OPS', 'OMP_NUM_THREADS', 'OMP_WAIT_POLICY',
                                              'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
                                              'LD_PRELOAD') if k in os.environ}
    return info


# ------------------------------------------------------------------ outputs
def _atomic_write(path: str, data: bytes) -> None:
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + osp.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


def _mem(v) -> str:
    return '-' if v is None else f'{v:.1f}'


def to_markdown(report: dict) -> str:
    m = report['machine']
    lines = [
        f"# Benchmark ({report['profile']}, {m['device']})", '',
        f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}"
        + (f", {m['gpu']}" if 'gpu' in m else '')
        + f"; allocator: {report['settings']['malloc']}"
        + f"; DO-Conv fused CPU composition: {'yes' if m.get('doconv_fused_compose') else 'no'}"
        + f"; load average {report['loadavg_before']} -> {report['loadavg_after']}; "
        f"{report['elapsed_s']:.0f} s.", '',
        'Ratios are candidate / baseline (lower is better): median of the per-round ratios of '
        'interleaved runs; a ratio over several shapes is their geometric mean. Peak memory: '
        f"{report['memory_method']}.", '',
        '## Targets', '',
        '| key | measured | target | met | per shape | ratio of minima | what |',
        '|---|---|---|---|---|---|---|'
    ]
    for key, target in report['targets'].items():
        detail = report['key_details'][key]
        per_case = ', '.join(f'{v:.3f}' for v in detail['per_case'].values())
        lines.append(f"| `{key}` | {report[key]:.3f} | {target:.2f} | "
                     f"{'yes' if report['met'][key] else '**no**'} | {per_case} | "
                     f"{detail['of_minima']:.3f} | {DESCRIPTIONS[key]} |")
    lines += ['', '## Cases', '',
              '| family | case | input | mode | candidate | cand. ms | baseline | base. ms | '
              'ratio | cand. MiB | base. MiB | repeats |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for case in report['cases']:
        res = case['results']
        for pair, ratio in case['ratios'].items():
            if ' cl/nchw' in pair or pair == 'ours best/timm best':
                continue
            cand, base = case['pairs'][pair]
            lines.append(
                f"| {case['family']} | {case['case']} | {'x'.join(map(str, case['shape']))} | "
                f"{case['mode']} | {cand} | {res[cand]['median_ms']:.2f} | {base} | "
                f"{res[base]['median_ms']:.2f} | {ratio:.3f} | "
                f"{_mem(res[cand].get('peak_mem_mb'))} | {_mem(res[base].get('peak_mem_mb'))} | "
                f"{case['repeats']}x{case['inner']} |")
    lines += ['', '## Channels-last / NCHW (inference)', '',
              '| model | NCHW ms | channels-last ms | CL / NCHW |', '|---|---|---|---|']
    for row in report['channels_last']:
        lines.append(f"| {row['model']} | {row['nchw_ms']:.2f} | {row['cl_ms']:.2f} | "
                     f"{row['cl_over_nchw']:.3f} |")
    lines += ['', '## MixConv fused / split', '',
              '| case | mode | split ms | fused ms | fused / split |', '|---|---|---|---|---|']
    for case in report['mixconv_fused_vs_split']:
        res = case['results']
        lines.append(f"| {case['case']} | {case['mode']} | {res['split']['median_ms']:.3f} | "
                     f"{res['fused']['median_ms']:.3f} | {case['ratios']['fused/split']:.3f} |")
    return '\n'.join(lines) + '\n'


def to_png(report: dict) -> bytes:
    import io

    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = list(report['targets'])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw=dict(width_ratios=[1, 1.3]))
    ax = axes[0]
    values = [report[k] for k in keys]
    colors = ['tab:green' if report['met'][k] else 'tab:red' for k in keys]
    ax.barh(range(len(keys)), values, color=colors)
    ax.scatter([report['targets'][k] for k in keys], range(len(keys)), marker='|', s=400,
               color='black', label='target', zorder=3)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(keys, fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color='grey', lw=0.8, ls='--')
    ax.set_xlabel('candidate / baseline (lower is better)')
    ax.set_title('headline ratios')
    ax.legend(loc='lower right', fontsize=8)
    ax = axes[1]
    labels, vals = [], []
    for case in report['cases']:
        for pair, ratio in case['ratios'].items():
            if case['family'] in ('doconv', 'mixconv', 'bsconvu') and case['mode'] == 'train' \
                    and pair in ('doconv/conv', 'mixconv/timm', 'bsconvu/reference'):
                labels.append(f"{case['case']}")
                vals.append(ratio)
    ax.barh(range(len(vals)), vals, color='tab:blue')
    ax.set_yticks(range(len(vals)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.axvline(1.0, color='grey', lw=0.8, ls='--')
    ax.set_xlabel('forward+backward, candidate / baseline')
    ax.set_title('per-layer training ratios')
    fig.suptitle(f"{report['profile']} benchmark on {report['machine']['device']}, "
                 f"{report['machine']['threads']} threads", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110)
    plt.close(fig)
    return buf.getvalue()


# --------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--quick', action='store_true',
                       help='the quick shapes, few repeats (about 80 s on 2 CPU cores)')
    group.add_argument('--smoke', action='store_true',
                       help='tiny shapes, 3 repeats: checks that every path runs (numbers '
                       'are not meaningful)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: the cores this process may use)')
    parser.add_argument('--only', nargs='+', default=None,
                        choices=['doconv', 'mixconv', 'bsconvu', 'resnet', 'mixnet', 'mobilenet'],
                        help='run only these suites (keys of the others are then missing)')
    parser.add_argument('--malloc', default='keep-freed', choices=['keep-freed', 'default'],
                        help="'keep-freed' (default): glibc keeps freed memory in the process "
                        "(see keep_freed_memory), removing page-fault noise; 'default': leave "
                        'the allocator as it is')
    parser.add_argument('--layer-batch', type=int, default=None,
                        help="override the profile's batch of the MixConv and BSConv-U suites")
    parser.add_argument('--doconv-batch', type=int, default=None,
                        help="override the profile's batch of the DO-Conv suite (32: ResNet-50's "
                        'per-GPU training batch)')
    parser.add_argument('--backbone-batch', type=int, default=None,
                        help="override the profile's batch of the backbone suites")
    parser.add_argument('--out', required=True, help='output JSON path (.md/.png beside it)')
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    profile_name = 'smoke' if args.smoke else 'quick' if args.quick else 'full'
    cfg = dict(PROFILES[profile_name])
    if args.layer_batch is not None:
        cfg['layer_batch'] = args.layer_batch
    if args.doconv_batch is not None:
        cfg['doconv_batch'] = args.doconv_batch
    if args.backbone_batch is not None:
        cfg['backbone_batch'] = cfg['mixnet_batch'] = args.backbone_batch
    if args.device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    device = torch.device(args.device)
    if args.threads is not None:
        threads = args.threads
    else:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, threads))
    malloc = 'default'
    if args.malloc == 'keep-freed':
        malloc = 'keep-freed' if keep_freed_memory() else 'default (mallopt unavailable)'
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    import mm_efficientconv  # noqa: F401  (compat fixes + registration)

    start = time.time()
    load_before = [round(v, 2) for v in os.getloadavg()]
    if load_before[0] > (os.cpu_count() or 1) and torch.get_num_threads() > 1 \
            and os.environ.get('OMP_WAIT_POLICY', '').upper() != 'PASSIVE':
        log(f'load average {load_before[0]} exceeds the {os.cpu_count()} cores: timings with '
            f'{torch.get_num_threads()} spinning OpenMP threads will be erratic; consider '
            'OMP_WAIT_POLICY=PASSIVE or --threads 1')
    suites = args.only or list(SUITES)
    cases, formats, fused_split, suite_seconds = [], [], [], {}
    for suite in suites:
        t0 = time.time()
        # the collections before every case (and every memory measurement) then scan only
        # what the suite creates: a full collection of the imported frameworks took 0.15 s
        gc.collect()
        gc.freeze()
        try:
            out = SUITES[suite](cfg, device)
        finally:
            gc.unfreeze()
        cases += out.get('cases', [])
        formats += out.get('channels_last', [])
        fused_split += out.get('fused_vs_split', [])
        suite_seconds[suite] = round(time.time() - t0, 1)
        log(f'{suite}: {suite_seconds[suite]} s')
    keys, details = headline_ratios(cases)
    targets = {k: v for k, v in TARGETS.items() if k in keys}
    report = dict(
        profile=profile_name,
        machine=machine_info(device),
        memory_method=('torch.cuda.max_memory_allocated() above the allocation before the call'
                       if device.type == 'cuda' else
                       'torch.profiler allocation events (profile_memory=True) summed in time '
                       'order, maximum above the level before the call (PyTorch CPU allocator; '
                       'oneDNN scratch buffers excluded)'),
        ratio_method='median over rounds of candidate/baseline of the same round (interleaved, '
                     'order rotating each round, after equal warm-up); geometric mean over '
                     'shapes',
        settings=dict(cfg, malloc=malloc),
        **{k: keys[k] for k in targets},
        targets=targets,
        met={k: bool(keys[k] <= t) for k, t in targets.items()},
        key_details=details,
        cases=cases,
        channels_last=formats,
        mixconv_fused_vs_split=fused_split,
        suite_seconds=suite_seconds,
        loadavg_before=load_before,
        loadavg_after=[round(v, 2) for v in os.getloadavg()],
        elapsed_s=time.time() - start,
    )
    base = osp.splitext(args.out)[0]
    _atomic_write(base + '.md', to_markdown(report).encode())
    _atomic_write(base + '.png', to_png(report))
    _atomic_write(args.out, json.dumps(report, indent=1).encode())
    for key, target in targets.items():
        log(f"{key:28s} {report[key]:.3f} (target <= {target}) "
            f"{'met' if report['met'][key] else 'MISSED'}")
    log(f'wrote {args.out} (+ .md, .png) in {report["elapsed_s"]:.0f} s')
    return report


if __name__ == '__main__':
    main()
