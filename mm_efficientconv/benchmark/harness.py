# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The measuring harness: steps, interleaved timing, peak memory.

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
the load drift of a shared machine (the ratio of the medians and of the minima
are stored too). Each time key also gets a 95% bootstrap interval over its
rounds (:func:`bootstrap_interval`).

Peak memory, measured in a separate untimed call, through public APIs only:
on CUDA ``torch.cuda.max_memory_allocated()`` minus the allocation before the
call; on the CPU the events of ``torch.profiler.profile(profile_memory=True)``
(``prof.events()``): each operator's *self* CPU memory (bytes it allocated
minus bytes it freed, nested operators excluded) summed in start order, the
maximum taken, i.e. the peak above the level before the call at operator
granularity (a buffer that one operator allocates and frees again, e.g.
oneDNN scratch space, is not seen).
"""
import contextlib
import ctypes
import ctypes.util
import gc
import math
import os
import random
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# the profiler behind the CPU peak-memory figures (kineto) logs two lines per use at its default
# level; read when kineto initialises, so set before torch is imported
os.environ.setdefault('KINETO_LOG_LEVEL', '6')

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402


def log(msg: str) -> None:
    """One progress line on stderr."""
    print(f'[benchmark] {msg}', file=sys.stderr, flush=True)


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


def sync(device: torch.device) -> None:
    """Waits for the device (CUDA); a no-op on the CPU."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def sample(fn: Callable[[], None], inner: int, device: torch.device) -> float:
    """Mean seconds of ``inner`` back-to-back calls of ``fn``."""
    sync(device)
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    sync(device)
    return (time.perf_counter() - start) / inner


class Step:
    """A callable benchmark step plus ``clear()`` (drops gradients, so that a
    memory measurement starts from the same state as a timed call).

    Args:
        fn (callable): The work of one step.
        params (Sequence[Tensor]): Tensors whose ``.grad`` is dropped before
            every call. Defaults to ().
    """

    def __init__(self, fn: Callable[[], None], params: Sequence[torch.Tensor] = ()) -> None:
        self.fn = fn
        self.params = list(params)

    def clear(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self) -> None:
        self.clear()
        self.fn()


def outputs(out) -> List[torch.Tensor]:
    """The tensors of a tensor / tuple / list output."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [o for o in out if isinstance(o, torch.Tensor)]


def make_step(module: nn.Module, x: torch.Tensor, mode: str) -> Step:
    """A layer- or backbone-level step.

    Args:
        module (nn.Module): What runs.
        x (Tensor): Its input.
        mode (str): ``'train'``: forward + backward in train mode (fixed
            random output gradient); ``'forward'``: train-mode forward with
            autograd recording; ``'eval'`` / ``'deploy'``: eval-mode forward
            under ``no_grad``.

    Returns:
        Step: The step.
    """
    if mode not in ('train', 'forward', 'eval', 'deploy'):
        raise ValueError(f"mode must be 'train', 'forward', 'eval' or 'deploy', got {mode!r}")
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
        outs = outputs(module(xg))
    grads = [torch.randn_like(o) for o in outs]
    params = [p for p in module.parameters() if p.requires_grad] + [xg]

    def run():
        torch.autograd.backward(outputs(module(xg)), grads)

    return Step(run, params)


def peak_memory_mb(step: Step, device: torch.device) -> Optional[float]:
    """Peak bytes allocated by one call of ``step`` above the level before it
    (MiB); None where the profiler cannot measure it."""
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
    from torch.profiler import ProfilerActivity, profile
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step.fn()
        events = sorted(prof.events(), key=lambda e: (e.time_range.start, -e.time_range.end))
    except Exception as err:  # pragma: no cover - depends on the profiler build
        log(f'peak memory unavailable: {err!r}')
        return None
    finally:
        step.clear()
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def interleaved(steps: Dict[str, Callable[[], None]], pairs: Dict[str, Tuple[str, str]],
                cfg: dict, device: torch.device, memory: bool = False) -> dict:
    """Times ``steps`` interleaved (order rotating every round) after an
    equal warm-up.

    Args:
        steps (dict[str, Step]): Candidates by name.
        pairs (dict[str, tuple[str, str]]): Ratio name -> (candidate,
            baseline).
        cfg (dict): The run profile (``warmup``, ``min_sample_ms``,
            ``case_budget_s``, ``min_repeats``, ``max_repeats``).
        device (torch.device): Where the steps run.
        memory (bool): Also measure each step's peak memory. Defaults to
            False.

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
    est = max(sample(steps[n], 1, device) for n in names)
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
                raw[n].append(sample(steps[n], inner, device))
    finally:
        if gc_was_enabled:
            gc.enable()
    results = {}
    for n in names:
        results[n] = timing_stats([t * 1e3 for t in raw[n]])
        if memory:
            results[n]['peak_mem_mb'] = peak_memory_mb(steps[n], device)
    res = dict(results=results, ratios={}, ratios_of_medians={}, ratios_of_minima={}, pairs={},
               repeats=repeats, inner=inner)
    for key, (cand, base) in pairs.items():
        add_pair_ratio(res, key, cand, base)
    return res


def add_pair_ratio(res: dict, name: str, cand: str, base: str) -> None:
    """Adds ratio ``name`` of step ``cand`` over step ``base`` to an
    :func:`interleaved` result: ``ratios`` (median of the per-round ratios,
    the figure reported), ``ratios_of_medians``, ``ratios_of_minima`` and
    ``pairs``."""
    a, b = res['results'][cand], res['results'][base]
    res['ratios'][name] = paired_ratio(a['raw_ms'], b['raw_ms'])
    res['ratios_of_medians'][name] = a['median_ms'] / b['median_ms']
    res['ratios_of_minima'][name] = a['min_ms'] / b['min_ms']
    res['pairs'][name] = [cand, base]


def timing_stats(raw_ms: Sequence[float]) -> dict:
    """``median_ms``, ``min_ms``, ``iqr_ms`` and ``raw_ms`` (the rounds, in
    order) of one step's samples (ms)."""
    ts = sorted(raw_ms)
    q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
    return dict(median_ms=statistics.median(ts), min_ms=ts[0], iqr_ms=q[2] - q[0],
                raw_ms=list(raw_ms))


def paired_ratio(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """Median of the per-round ratios ``candidate[i] / baseline[i]``."""
    return statistics.median(a / b for a, b in zip(candidate, baseline))


def round_ratios(case: dict, pair: str) -> Optional[List[float]]:
    """The per-round ratios behind ratio ``pair`` of an :func:`interleaved`
    result (or a case holding one); None where its rounds were not kept."""
    names = case.get('pairs', {}).get(pair)
    results = case.get('results', {})
    if not names or any('raw_ms' not in results.get(n, {}) for n in names):
        return None
    cand, base = (results[n]['raw_ms'] for n in names)
    return [a / b for a, b in zip(cand, base)]


def bootstrap_interval(per_case: Sequence[Sequence[float]], level: float = 0.95,
                       resamples: int = 2000, seed: int = 0) -> Tuple[float, float]:
    """Percentile bootstrap interval of a key's statistic (the geometric mean
    over cases of the median of each case's per-round ratios): every case's
    rounds resampled with replacement, ``resamples`` times, fixed ``seed``.

    It says how far the rounds of *this* run let the figure move; it cannot
    see what shifts a whole run (another process, the machine's memory
    bandwidth), so runs can still differ by more.
    """
    if not 0 < level < 1 or resamples < 1 or not per_case or not all(per_case):
        raise ValueError('bootstrap_interval needs 0 < level < 1, resamples >= 1 and at least one '
                         f'round per case, got level={level}, resamples={resamples}, '
                         f'rounds per case {[len(r) for r in per_case]}')
    rng = random.Random(seed)
    stats = sorted(
        geomean([statistics.median(rng.choices(r, k=len(r))) for r in per_case])
        for _ in range(resamples))
    tail = (1 - level) / 2
    return (stats[int(tail * resamples)],
            stats[min(resamples - 1, math.ceil((1 - tail) * resamples) - 1)])


def add_best_format_ratio(res: dict, models: Sequence[str], name: str) -> Dict[str, str]:
    """Adds ratio ``name`` to an :func:`interleaved` result: the paired ratio
    of the faster memory format of ``models[0]`` over that of ``models[1]``
    (each ``MODEL@nchw`` / ``MODEL@cl``, the faster chosen by median; a
    format that was not measured is not a candidate); records the choice
    (``best_format``) and ``name`` (``best_format_pair``).
    Returns the chosen variant per model."""
    raw = res['results']
    best = {m: min((n for n in (f'{m}@nchw', f'{m}@cl') if n in raw),
                   key=lambda n: raw[n]['median_ms']) for m in models}
    add_pair_ratio(res, name, best[models[0]], best[models[1]])
    res['best_format'] = best
    res['best_format_pair'] = name
    return best


def geomean(values: Sequence[float]) -> float:
    """Geometric mean."""
    return math.exp(sum(math.log(v) for v in values) / len(values))


def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference of the outputs of ``a`` and ``b`` on ``x``
    (no gradient)."""
    with torch.no_grad():
        ya, yb = outputs(a(x)), outputs(b(x))
    return max(float((p - q).abs().max()) for p, q in zip(ya, yb))


def fmt_ratios(ratios: dict) -> str:
    """``name=ratio, ...`` for the progress log."""
    return ', '.join(f'{k}={v:.3f}' for k, v in ratios.items())


def kernel_cache_scope():
    """The layers' explicit composed-kernel cache scope
    (``mm_efficientconv.layers.cached_kernels()``), the documented way to
    evaluate unfolded DO-Conv / MixConv models."""
    from mm_efficientconv.layers import cached_kernels
    return cached_kernels()


def eval_scope(mode: str):
    """:func:`kernel_cache_scope` for the no-gradient modes (``'eval'``,
    ``'deploy'``), a no-op context otherwise."""
    return kernel_cache_scope() if mode in ('eval', 'deploy') else contextlib.nullcontext()
