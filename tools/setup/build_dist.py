# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Builds the sdist and the wheel of mm_efficientconv from a clean copy of the
work tree (``make dist``; also used by the packaging test).

``python -m build`` writes the ``.mim`` copies (configs, tools, model index)
into the source tree it builds from; building from a copy of the tracked and
not-ignored files keeps the work tree's editable-install links and never
packs stray outputs (work_dirs, build folders, compiled objects). The wheel is
built from the sdist, so a wheel that works proves the sdist complete.

Example:
    python tools/setup/build_dist.py --outdir dist
    python tools/setup/build_dist.py --outdir dist --no-ops   # pure-Python wheel (PyTorch fallback)
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# without git (an unpacked archive): everything but these
NOT_SOURCES = {'.git', '.venv', 'work_dirs', 'build', 'dist', 'data', '__pycache__', '.pytest_cache',
               '.mim'}


def source_files(root: str = ROOT) -> List[str]:
    """Paths (relative to ``root``) of the files a build may see: git's tracked
    and untracked-but-not-ignored files, or, outside a git checkout, every file
    outside the usual output folders."""
    if osp.isdir(osp.join(root, '.git')) and shutil.which('git'):
        out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                             cwd=root, check=True, capture_output=True).stdout
        return sorted(p for p in set(out.decode().split('\0')) if p and osp.isfile(osp.join(root, p)))
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in NOT_SOURCES and not d.endswith('.egg-info')]
        files += [osp.relpath(osp.join(folder, n), root) for n in names
                  if not n.endswith(('.pyc', '.so'))]
    return sorted(files)


def build_dist(outdir: str, with_ops: bool = True, root: str = ROOT,
               python: str = sys.executable, env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Builds ``{'sdist': path, 'wheel': path}`` into ``outdir``.

    Args:
        outdir (str): Where the archives go (created if needed).
        with_ops (bool): Compile ``mm_efficientconv._ext`` into the wheel
            (against ``python``'s torch). Defaults to True.
        root (str): The source tree. Defaults to this repository.
        python (str): The interpreter whose environment builds (``build`` and
            setuptools installed there; no isolation). Defaults to this one.
        env (dict, optional): Environment of the build. Defaults to
            ``os.environ``.
    """
    outdir = osp.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    env = dict(os.environ if env is None else env, MMEFF_WITH_OPS='1' if with_ops else '0')
    with tempfile.TemporaryDirectory(prefix='mmeff-build-') as tmp:
        src = osp.join(tmp, 'mm_efficientconv')
        for path in source_files(root):
            os.makedirs(osp.dirname(osp.join(src, path)), exist_ok=True)
            shutil.copy2(osp.join(root, path), osp.join(src, path))
        # build into a private folder first: outdir never holds a half-written archive
        staging = osp.join(tmp, 'dist')
        result = subprocess.run([python, '-m', 'build', '--no-isolation', '--outdir', staging, src],
                                cwd=tmp, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f'python -m build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}')
        built = {}
        for name in sorted(os.listdir(staging)):
            kind = 'wheel' if name.endswith('.whl') else 'sdist' if name.endswith('.tar.gz') else None
            if kind:
                shutil.move(osp.join(staging, name), osp.join(outdir, name))
                built[kind] = osp.join(outdir, name)
    if set(built) != {'sdist', 'wheel'}:
        raise RuntimeError(f'python -m build produced {sorted(built)}, expected an sdist and a wheel')
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--outdir', default=osp.join(ROOT, 'dist'), help='default: dist/')
    parser.add_argument('--no-ops', action='store_true',
                        help='do not compile mm_efficientconv._ext (pure-Python wheel)')
    args = parser.parse_args(argv)
    for kind, path in build_dist(args.outdir, with_ops=not args.no_ops).items():
        print(f'{kind}: {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
