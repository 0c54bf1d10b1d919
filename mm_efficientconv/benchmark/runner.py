# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Runs the suites of a profile and assembles the report."""
import gc
import os
import time
import traceback
from typing import Optional, Sequence

import torch

from .backbone_suites import bench_mixnet, bench_mobilenet, bench_resnet
from .harness import keep_freed_memory, log
from .layer_suites import bench_bsconv, bench_doconv, bench_mixconv
from .profiles import profile_config
from .report import log_summary, machine_info, summarise
from .train_suites import bench_mixnet_train, bench_mobilenet_v2_train, bench_resnet_train

SUITES = dict(doconv=bench_doconv, mixconv=bench_mixconv, bsconvu=bench_bsconv,
              resnet=bench_resnet, mixnet=bench_mixnet, mobilenet=bench_mobilenet,
              resnet_train=bench_resnet_train, mixnet_train=bench_mixnet_train,
              mobilenet_v2_train=bench_mobilenet_v2_train)


def _memory_method(device: torch.device) -> str:
    if device.type == 'cuda':
        return 'torch.cuda.max_memory_allocated() above the allocation before the call'
    return ('torch.profiler events (profile_memory=True): self CPU memory of each operator summed '
            'in start order, maximum above the level before the call (PyTorch CPU allocator, '
            'operator granularity; oneDNN scratch buffers excluded)')


def run_benchmark(profile: str = 'quick',
                  device: str = 'cpu',
                  threads: Optional[int] = None,
                  only: Optional[Sequence[str]] = None,
                  malloc: str = 'keep-freed',
                  layer_batch: Optional[int] = None,
                  doconv_batch: Optional[int] = None,
                  backbone_batch: Optional[int] = None,
                  train_batch: Optional[int] = None,
                  keep_going: bool = False) -> dict:
    """Runs the benchmark and returns the report (nothing is written; see
    :func:`~.report.write_report`).

    Args:
        profile (str): ``'smoke'`` (tiny shapes, 3 repeats: checks that every
            path runs), ``'quick'`` or ``'full'``. Defaults to 'quick'.
        device (str): ``'cpu'`` or ``'cuda'``. Defaults to 'cpu'.
        threads (int, optional): ``torch.set_num_threads``; None: the cores
            this process may use. Defaults to None.
        only (Sequence[str], optional): Run only these suites (keys of
            :data:`SUITES`); keys of the others are then missing. Defaults to
            None (all).
        malloc (str): ``'keep-freed'`` (glibc keeps freed memory, see
            :func:`~.harness.keep_freed_memory`) or ``'default'``. Defaults
            to 'keep-freed'.
        layer_batch (int, optional): Batch of the MixConv and BSConv-U suites.
        doconv_batch (int, optional): Batch of the DO-Conv suite.
        backbone_batch (int, optional): Batch of the backbone suites.
        train_batch (int, optional): Batch of every training-step suite (the
            ResNet pair's own ``resnet_train_batch`` included).
        keep_going (bool): A suite that raises is recorded under
            ``suite_errors`` (its keys then missing) and the others still run,
            instead of the error propagating. Defaults to False.

    Returns:
        dict: The report (see ``FILE.json`` of the CLI).
    """
    cfg = profile_config(profile, device)
    if malloc not in ('keep-freed', 'default'):
        raise ValueError(f"malloc must be 'keep-freed' or 'default', got {malloc!r}")
    unknown = sorted(set(only or ()) - set(SUITES))
    if unknown:
        raise ValueError(f'only: unknown suites {unknown}; choose from {list(SUITES)}')
    for name, value in (('layer_batch', layer_batch), ('doconv_batch', doconv_batch),
                        ('backbone_batch', backbone_batch), ('train_batch', train_batch)):
        if value is not None:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
            cfg[name] = value
    if backbone_batch is not None:
        cfg['mixnet_batch'] = backbone_batch
    if train_batch is not None:
        cfg['resnet_train_batch'] = train_batch
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    dev = torch.device(device)
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            threads = os.cpu_count() or 1
    torch.set_num_threads(max(1, threads))
    malloc_setting = 'default'
    if malloc == 'keep-freed':
        malloc_setting = 'keep-freed' if keep_freed_memory() else 'default (mallopt unavailable)'
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    import mm_efficientconv  # noqa: F401  (compat fixes + registration)

    start = time.time()
    load_before = [round(v, 2) for v in os.getloadavg()]
    if load_before[0] > (os.cpu_count() or 1) and torch.get_num_threads() > 1 \
            and os.environ.get('OMP_WAIT_POLICY', '').upper() != 'PASSIVE' and dev.type == 'cpu':
        log(f'load average {load_before[0]} exceeds the {os.cpu_count()} cores: timings with '
            f'{torch.get_num_threads()} spinning OpenMP threads will be erratic; consider '
            'OMP_WAIT_POLICY=PASSIVE or --threads 1')
    cases, formats, fused_split, suite_seconds, suite_errors = [], [], [], {}, {}
    for suite in (only or list(SUITES)):
        t0 = time.time()
        # the collections before every case (and every memory measurement) then scan only
        # what the suite creates: a full collection of the imported frameworks took 0.15 s
        gc.collect()
        gc.freeze()
        try:
            out = SUITES[suite](cfg, dev)
        except Exception:
            if not keep_going:
                raise
            suite_errors[suite] = traceback.format_exc()
            log(f'{suite}: FAILED\n{suite_errors[suite]}')
            out = {}
        finally:
            gc.unfreeze()
        cases += out.get('cases', [])
        formats += out.get('channels_last', [])
        fused_split += out.get('fused_vs_split', [])
        suite_seconds[suite] = round(time.time() - t0, 1)
        log(f'{suite}: {suite_seconds[suite]} s')
    report = dict(
        profile=profile,
        machine=machine_info(dev),
        memory_method=_memory_method(dev),
        ratio_method='median over rounds of candidate/baseline of the same round (interleaved, '
                     'order rotating each round, after equal warm-up); geometric mean over '
                     'shapes; key_details[key]["interval"]: 95% bootstrap interval over the '
                     'rounds',
        settings=dict(cfg, malloc=malloc_setting),
        **summarise(cases, device),
        cases=cases,
        channels_last=formats,
        mixconv_fused_vs_split=fused_split,
        suite_seconds=suite_seconds,
        suite_errors=suite_errors,
        loadavg_before=load_before,
        loadavg_after=[round(v, 2) for v in os.getloadavg()],
        elapsed_s=time.time() - start,
    )
    log_summary(report)
    return report
