# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The GPU check (issue 14): layer parity against float64, AMP training steps
through mmpretrain, the benchmark on the device and ONNX export of a model on
the device, in a few minutes on one GPU (the checks:
``mm_efficientconv.benchmark.gpu_check``).

The device machine gets a copy of the work tree and a Python with torch, maybe
without the OpenMMLab stack. The stack's pure-Python parts (mmengine,
mmpretrain, mmcv's Python code without its compiled ops -- like mmcv-lite,
enough for the layers and mmpretrain --, timm and their small pure-Python
dependencies) travel with the tree: ``--pack-deps DIR`` copies them from this
environment into DIR (an ignored folder such as ``work_dirs/gpu_deps``: carry
it to the device machine), and ``--deps DIR`` puts them first on ``sys.path``
there. Binary dependencies (numpy, opencv for ``mmcv.image``, onnx and
onnxruntime for the ONNX section) must be installed on that machine; a missing
one fails the section that needs it, with the import error in the report.

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
import importlib
import os
import os.path as osp
import shutil
import sys

os.environ.setdefault('KINETO_LOG_LEVEL', '6')
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

#: Pure-Python packages the check imports (beyond torch / numpy), copied by --pack-deps.
PURE_PYTHON_DEPS = ('mmengine', 'mmpretrain', 'mmcv', 'timm', 'addict', 'yapf', 'termcolor',
                    'rich', 'markdown_it', 'mdurl', 'pygments', 'platformdirs', 'mat4py',
                    'modelindex', 'einops', 'huggingface_hub', 'safetensors', 'yaml', 'tqdm',
                    'packaging', 'filelock', 'fsspec')
SECTIONS = ('parity', 'train', 'benchmark', 'onnx')


def pack_deps(target: str, names=PURE_PYTHON_DEPS) -> dict:
    """Copies the importable packages ``names`` into the new folder
    ``target`` without compiled extension modules (written to a temporary
    folder first, then renamed)."""
    if osp.exists(target):
        raise SystemExit(f'--pack-deps: {target} exists; choose a new folder')
    tmp = target.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    copied, missing = {}, []
    try:
        for name in names:
            try:
                module = importlib.import_module(name)
            except ImportError:
                missing.append(name)
                continue
            src = module.__file__
            if osp.basename(src) == '__init__.py':
                src = osp.dirname(src)
            dst = osp.join(tmp, osp.basename(src))
            if osp.isdir(src):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns('*.so', '*.pyd',
                                                                        '__pycache__'))
                size = sum(osp.getsize(osp.join(d, f)) for d, _, fs in os.walk(dst) for f in fs)
            else:
                shutil.copy2(src, dst)
                size = osp.getsize(dst)
            copied[name] = size
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f'packed {len(copied)} packages ({sum(copied.values()) / 2**20:.1f} MiB) into {target}; '
          f'not importable here: {missing}')
    return dict(copied=copied, missing=missing)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--profile', default=None, choices=['full', 'short'],
                        help="'full' (default on CUDA) or 'short' (default on the CPU)")
    parser.add_argument('--sections', nargs='+', default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument('--deps', default=None,
                        help='a folder written by --pack-deps, put first on sys.path')
    parser.add_argument('--pack-deps', default=None, metavar='DIR',
                        help='copy the pure-Python stack into the new folder DIR and exit')
    parser.add_argument('--out', default=None, help='OUT.json (OUT.md beside it)')
    args = parser.parse_args(argv)
    if args.pack_deps is None and args.out is None:
        parser.error('--out is required (unless --pack-deps)')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.pack_deps:
        return pack_deps(args.pack_deps)
    if args.deps:
        if not osp.isdir(args.deps):
            raise SystemExit(f'--deps: {args.deps} is not a folder')
        sys.path.insert(0, osp.abspath(args.deps))
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)  # the work tree's package, installed or not
    from mm_efficientconv.benchmark.gpu_check import run_gpu_check
    report = run_gpu_check(args.device, args.profile, args.sections, args.out)
    print(f"[gpu_check] {'PASSED' if report['passed'] else 'FAILED'} in "
          f"{report['elapsed_s']:.0f} s; wrote {args.out} (+ .md)", flush=True)
    return report


if __name__ == '__main__':
    sys.exit(0 if main().get('passed', True) else 1)
