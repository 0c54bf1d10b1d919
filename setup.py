"""Packaging of mm_efficientconv (an OpenMMLab 2.x plugin).

Like mmpretrain / mmdet / mmseg, the package carries its configs, tools and
model index in ``mm_efficientconv/.mim`` (see :func:`add_mim_extension`): that
folder is what ``_base_ = 'mm_efficientconv::doconv/xxx.py'`` and
``mim train mm_efficientconv CONFIG`` read. Wheels and sdists copy the files
in; an editable install links them.

Tested: CPython 3.11 with torch 2.14.1, mmcv 2.1.0, mmengine 0.10.7,
mmpretrain 1.2.0, mmdet 3.3.0, mmsegmentation 1.2.2 (``tools/setup``).
torch is not a requirement (as in every OpenMMLab package): install the build
that matches your CUDA first; ``pip install`` never replaces it.
"""
import glob
import os
import os.path as osp
import shutil
import sys
import warnings

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
PACKAGE = 'mm_efficientconv'
# what the .mim folder carries (tools/setup builds this repository's own .venv: not shipped)
MIM_FILES = ('configs', 'tools', 'model-index.yml')
MIM_IGNORE = shutil.ignore_patterns('__pycache__', '*.pyc', 'setup')


def readme():
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def _mim_mode():
    """'symlink' for editable installs, 'copy' for wheels and sdists, None
    for every other setup command (egg_info, metadata, clean...)."""
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        return 'copy' if os.name == 'nt' else 'symlink'
    if commands & {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'}:
        return 'copy'
    return None


def add_mim_extension():
    """Puts ``configs/``, ``tools/`` and ``model-index.yml`` into
    ``mm_efficientconv/.mim``: relative symlinks in an editable install,
    copies when building a wheel or an sdist.

    Inside an unpacked sdist the sources are absent and the ``.mim`` copy the
    sdist carries is kept as it is.
    """
    mode = _mim_mode()
    if mode is None:
        return
    mim_path = osp.join(ROOT, PACKAGE, '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(ROOT, name)
        if not osp.exists(src):
            continue
        dst = osp.join(mim_path, name)
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=MIM_IGNORE)
        else:
            shutil.copyfile(src, dst)


def compiled_ops():
    """The optional compiled CPU ops (``mm_efficientconv._ext``).

    Built when torch is importable at build time (``pip install
    --no-build-isolation``, as ``make setup`` does) and ``MMEFF_WITH_OPS`` is
    not ``0``. A failed compile only warns (the message starts with
    ``mm_efficientconv._ext``): every op has a PyTorch fallback.
    """
    if os.environ.get('MMEFF_WITH_OPS', '1') == '0':
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        warnings.warn('mm_efficientconv._ext: torch is not importable at build time, building '
                      'without the compiled ops (install with --no-build-isolation to get them)')
        return [], {}

    class OptionalBuildExtension(BuildExtension):

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as e:  # noqa: BLE001 - any compiler failure
                warnings.warn(f'mm_efficientconv._ext: could not compile {ext.name} ({e}); '
                              'the PyTorch fallback is used')

    sources = sorted(glob.glob(f'{PACKAGE}/csrc/*.cpp'))
    ext = CppExtension(
        f'{PACKAGE}._ext', sources,
        extra_compile_args=['-O3', '-fopenmp', '-fno-trapping-math', '-Wno-psabi'],
        extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': OptionalBuildExtension}


# What the tests import or run (tools/analysis/benchmark.py compares against timm and bsconv;
# the packaging test uses build and openmim).
TESTS_REQUIRE = [
    'pytest', 'timm', 'bsconv', 'openmim', 'build', 'matplotlib', 'scikit-learn', 'onnx',
    'onnxruntime'
]

if __name__ == '__main__':
    add_mim_extension()
    ext_modules, cmdclass = compiled_ops()
    setup(
        name=PACKAGE,
        version='0.1.0',
        description='BSConv, MixConv/MixNet and DO-Conv as OpenMMLab 2.x components',
        long_description=readme(),
        long_description_content_type='text/markdown',
        packages=find_packages(include=[PACKAGE, f'{PACKAGE}.*']),
        # the .mim files and csrc/ are listed in MANIFEST.in
        include_package_data=True,
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        # what is tested; other versions may work but are not tried
        python_requires='>=3.11,<3.12',
        classifiers=[
            'Programming Language :: Python :: 3.11',
            'License :: OSI Approved :: Apache Software License',
            'Operating System :: POSIX :: Linux',
        ],
        # The package imports torch, mmengine, mmcv (cnn bricks, no compiled mmcv op) and
        # mmpretrain (every backbone builds on its base classes and blocks; the BSConv-S
        # MobileNets subclass its MobileNetV2/V3). mmdet and mmseg are only needed by their
        # configs: the `codebases` extra, which carries their `mmcv < 2.2` cap.
        install_requires=['mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0', 'mmpretrain>=1.0.0'],
        extras_require={
            'codebases': [
                'mmcv>=2.0.0rc4,<2.2.0', 'mmdet>=3.3.0,<3.4', 'mmsegmentation>=1.2.2,<1.3', 'ftfy',
                'regex'
            ],
            'tests': TESTS_REQUIRE,
        },
        license='Apache License 2.0',
        zip_safe=False,
    )
