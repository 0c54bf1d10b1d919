# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Speed and peak memory of the package's layers, backbones and whole
training steps against their baselines, every figure measured side by side
in one run. ``tools/analysis/benchmark.py`` is the command line.

Modules: :mod:`.harness` (steps, interleaved timing, peak memory; the method
is described there), :mod:`.profiles` (keys, targets, run profiles, shapes),
:mod:`.layer_suites`, :mod:`.backbone_suites`, :mod:`.train_suites` (what is
compared), :mod:`.report` (headline keys, combining runs, markdown, chart, atomic writes),
:mod:`.runner` (:func:`run_benchmark`).

Not imported by ``import mm_efficientconv``; timm and bsconv (the reference
implementations compared against) are imported only inside the suites that
use them.

Example:
    >>> from mm_efficientconv.benchmark import run_benchmark, write_report
    >>> report = run_benchmark('quick', device='cpu')
    >>> write_report(report, 'work_dirs/bench/quick.json')
"""
from .harness import Step, interleaved, keep_freed_memory, make_step, peak_memory_mb
from .profiles import (CUDA_TARGETS, DESCRIPTIONS, PROFILES, TARGETS, profile_config,
                       targets_for)
from .report import combine_reports, headline_ratios, to_markdown, write_report
from .runner import SUITES, run_benchmark

__all__ = [
    'Step', 'interleaved', 'keep_freed_memory', 'make_step', 'peak_memory_mb', 'DESCRIPTIONS',
    'PROFILES', 'CUDA_TARGETS', 'TARGETS', 'profile_config', 'targets_for', 'combine_reports',
    'headline_ratios', 'to_markdown', 'write_report', 'SUITES', 'run_benchmark'
]
