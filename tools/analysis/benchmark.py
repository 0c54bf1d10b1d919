# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Speed and peak memory of the package's layers, backbones and whole
training steps against their baselines, every figure measured side by side
in one run (the library: ``mm_efficientconv.benchmark``, where the method is
described).

Example:
    python tools/analysis/benchmark.py --quick --out work_dirs/bench/quick.json
    python tools/analysis/benchmark.py --device cuda --quick --out work_dirs/bench/cuda.json
    # several runs of one profile as one report (rounds pooled; each run kept under "runs")
    python tools/analysis/benchmark.py --combine work_dirs/bench/q1.json work_dirs/bench/q2.json \
        --out work_dirs/bench/combined.json

Writes ``FILE.json``, ``FILE.md`` (tables) and ``FILE.png`` (chart), each
atomically.
"""
import argparse
import json
import os
import os.path as osp

# the profiler behind the CPU peak-memory figures (kineto) logs two lines per use at its default
# level; read when kineto initialises, so set before torch is imported
os.environ.setdefault('KINETO_LOG_LEVEL', '6')

from mm_efficientconv.benchmark import SUITES, run_benchmark, write_report  # noqa: E402
from mm_efficientconv.benchmark.harness import log  # noqa: E402
from mm_efficientconv.benchmark.report import combine_reports, log_summary  # noqa: E402

RUN_OPTIONS = ('device', 'threads', 'only', 'malloc', 'layer_batch', 'doconv_batch',
               'backbone_batch', 'train_batch')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--quick', action='store_true',
                       help='the quick shapes, few repeats (under 2.5 min on 2 CPU cores)')
    group.add_argument('--smoke', action='store_true',
                       help='tiny shapes, 3 repeats: checks that every path runs (numbers '
                       'are not meaningful)')
    group.add_argument('--combine', nargs='+', metavar='FILE.json', default=None,
                       help='run nothing: combine the reports of two or more runs of one '
                       'profile (rounds pooled) into --out')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: the cores this process may use)')
    parser.add_argument('--only', nargs='+', default=None, choices=list(SUITES),
                        help='run only these suites (keys of the others are then missing)')
    parser.add_argument('--malloc', default='keep-freed', choices=['keep-freed', 'default'],
                        help="'keep-freed' (default): glibc keeps freed memory in the process "
                        "(removes page-fault noise); 'default': leave the allocator as it is")
    parser.add_argument('--layer-batch', type=int, default=None,
                        help="override the profile's batch of the MixConv and BSConv-U suites")
    parser.add_argument('--doconv-batch', type=int, default=None,
                        help="override the profile's batch of the DO-Conv suite (32: ResNet-50's "
                        'per-GPU training batch)')
    parser.add_argument('--backbone-batch', type=int, default=None,
                        help="override the profile's batch of the backbone suites")
    parser.add_argument('--train-batch', type=int, default=None,
                        help="override the profile's batch of the whole-network training steps")
    parser.add_argument('--out', required=True, help='output JSON path (.md/.png beside it)')
    args = parser.parse_args(argv)
    if args.combine is not None:
        defaults = parser.parse_args(['--out', args.out])
        given = [f"--{o.replace('_', '-')}" for o in RUN_OPTIONS
                 if getattr(args, o) != getattr(defaults, o)]
        if given:
            parser.error(f'--combine runs nothing; it takes no run options (got {given})')
        base = osp.splitext(args.out)[0]
        outputs = {osp.realpath(base + ext) for ext in ('.json', '.md', '.png')}
        inputs = [f for f in args.combine if osp.realpath(f) in outputs]
        if inputs:
            parser.error(f'--out {args.out} would overwrite the input {inputs[0]}')
    return args


def combine(files, out: str) -> dict:
    """Combines the reports in ``files`` into ``out`` (+ .md, .png)."""
    reports = []
    for path in files:
        try:
            with open(path) as f:
                reports.append(json.load(f))
        except (OSError, ValueError) as err:
            raise SystemExit(f'--combine: cannot read {path}: {err}') from None
    try:
        report = combine_reports(reports, sources=list(files))
    except ValueError as err:  # reports[i]: the i-th file
        raise SystemExit(f'--combine {" ".join(files)}: {err}') from None
    write_report(report, out)
    log_summary(report)
    log(f'wrote {out} (+ .md, .png): {len(files)} runs combined')
    return report


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.combine is not None:
        return combine(args.combine, args.out)
    report = run_benchmark(
        profile='smoke' if args.smoke else 'quick' if args.quick else 'full',
        device=args.device, threads=args.threads, only=args.only, malloc=args.malloc,
        layer_batch=args.layer_batch, doconv_batch=args.doconv_batch,
        backbone_batch=args.backbone_batch, train_batch=args.train_batch)
    write_report(report, args.out)
    log(f'wrote {args.out} (+ .md, .png) in {report["elapsed_s"]:.0f} s')
    return report


if __name__ == '__main__':
    main()
