# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Speed and peak memory of the package's layers, backbones and whole
training steps against their baselines, every figure measured side by side
in one run (the library: ``mm_efficientconv.benchmark``, where the method is
described).

Example:
    python tools/analysis/benchmark.py --quick --out work_dirs/bench/quick.json
    python tools/analysis/benchmark.py --device cuda --quick --out work_dirs/bench/cuda.json

Writes ``FILE.json``, ``FILE.md`` (tables) and ``FILE.png`` (chart), each
atomically.
"""
import argparse
import os

# the profiler behind the CPU peak-memory figures (kineto) logs two lines per use at its default
# level; read when kineto initialises, so set before torch is imported
os.environ.setdefault('KINETO_LOG_LEVEL', '6')

from mm_efficientconv.benchmark import SUITES, run_benchmark, write_report  # noqa: E402
from mm_efficientconv.benchmark.harness import log  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--quick', action='store_true',
                       help='the quick shapes, few repeats (under 2.5 min on 2 CPU cores)')
    group.add_argument('--smoke', action='store_true',
                       help='tiny shapes, 3 repeats: checks that every path runs (numbers '
                       'are not meaningful)')
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
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
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
