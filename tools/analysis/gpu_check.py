# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The GPU check (issue 14): layer parity against float64, AMP training steps
through mmpretrain, the benchmark on the device and ONNX export of a model on
the device, in a few minutes on one GPU (the checks:
``mm_efficientconv.benchmark.gpu_check``).

The device machine gets a copy of the work tree and a Python with torch, maybe
without the OpenMMLab stack. The stack's pure-Python parts (mmengine,
mmpretrain, mmcv's Python code without its compiled ops -- like mmcv-lite,
enough for the layers and mmpretrain --, timm and the pure-Python
distributions they require) travel with the tree: ``--pack-deps DIR`` copies
them from this environment into DIR (an ignored folder such as
``work_dirs/gpu_deps``: carry it to the device machine), and ``--deps DIR``
puts DIR last on ``sys.path`` there, so that what the machine has installed
wins and the packed distributions fill the gaps. Binary dependencies (numpy,
opencv for ``mmcv.image``, PyYAML, safetensors, onnx and onnxruntime for the
ONNX section: ``--pack-deps`` lists them) must be installed on that machine; a
missing one fails the section that needs it, with the import error in the
report.

Examples:
    # here, before sending the tree
    python tools/analysis/gpu_check.py --pack-deps work_dirs/gpu_deps
    # on the GPU machine (profile 'full')
    python tools/analysis/gpu_check.py --device cuda --deps work_dirs/gpu_deps \\
        --out work_dirs/gpu_check/cuda.json
    # end-to-end verification on a CPU (profile 'short': small shapes, the smoke benchmark)
    python tools/analysis/gpu_check.py --device cpu --out work_dirs/gpu_check/cpu.json

Writes ``OUT.json`` and ``OUT.md`` (atomically); exit status 0 only if every
section passed.
"""
import argparse
import os
import os.path as osp
import sys

os.environ.setdefault('KINETO_LOG_LEVEL', '6')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

SECTIONS = ('parity', 'train', 'benchmark', 'onnx', 'profile')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--profile', default=None, choices=['full', 'short'],
                        help="'full' (default on CUDA) or 'short' (default on the CPU)")
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument('--deps', default=None,
                        help='a folder written by --pack-deps, put last on sys.path')
    parser.add_argument('--pack-deps', default=None, metavar='DIR',
                        help='copy the pure-Python stack into the new folder DIR and exit')
    parser.add_argument('--out', default=None, help='OUT.json (OUT.md beside it)')
    args = parser.parse_args(argv)
    if args.pack_deps is None and args.out is None:
        parser.error('--out is required (unless --pack-deps)')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # the work tree's package, installed or not
    if args.pack_deps:
        from mm_efficientconv.benchmark.gpu_check import pack_pure_python_deps
        return pack_pure_python_deps(args.pack_deps)
    if args.deps:
        if not osp.isdir(args.deps):
            raise SystemExit(f'--deps: {args.deps} is not a folder')
        # last on the path: what the machine has installed wins, the packed stack fills the gaps
        sys.path.append(osp.abspath(args.deps))
    from mm_efficientconv.benchmark.gpu_check import run_gpu_check
    report = run_gpu_check(args.device, args.profile, args.sections, args.out)
    print(f"[gpu_check] {'PASSED' if report['passed'] else 'FAILED'} in "
          f"{report['elapsed_s']:.0f} s; wrote {args.out} (+ .md)", flush=True)
    return report


if __name__ == '__main__':
    sys.exit(0 if main().get('passed', True) else 1)
