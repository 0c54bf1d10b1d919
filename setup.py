import os
import warnings

from setuptools import find_packages, setup


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def compiled_ops():
    """The optional compiled CPU ops (``mm_efficientconv._ext``).

    Built when torch is importable at build time (``pip install
    --no-build-isolation``, as ``make setup`` does) and ``MMEFF_WITH_OPS`` is
    not ``0``. A failed compile only warns: every op has a PyTorch fallback.
    """
    if os.environ.get('MMEFF_WITH_OPS', '1') == '0':
        return [], {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        warnings.warn('torch is not importable at build time: building without the compiled '
                      'ops (install with --no-build-isolation to get them)')
        return [], {}

    class OptionalBuildExtension(BuildExtension):

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as e:  # noqa: BLE001 - any compiler failure
                warnings.warn(f'could not compile {ext.name} ({e}); the PyTorch fallback is used')

    ext = CppExtension(
        'mm_efficientconv._ext', ['mm_efficientconv/csrc/doconv_compose.cpp'],
        extra_compile_args=['-O3', '-fopenmp', '-Wno-psabi'], extra_link_args=['-fopenmp'])
    return [ext], {'build_ext': OptionalBuildExtension}


ext_modules, cmdclass = compiled_ops()

setup(
    name='mm_efficientconv',
    version='0.1.0',
    description='BSConv, MixConv/MixNet and DO-Conv as OpenMMLab 2.x components',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mm_efficientconv', 'mm_efficientconv.*']),
    package_data={'mm_efficientconv': ['csrc/*.cpp']},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    python_requires='>=3.8',
    install_requires=['mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0', 'mmpretrain>=1.0.0'],
    extras_require={
        'codebases': ['mmdet==3.3.0', 'mmsegmentation==1.2.2', 'ftfy', 'regex'],
        'tests': ['pytest', 'onnx', 'onnxruntime', 'scikit-learn'],
    },
    license='Apache License 2.0',
    zip_safe=False,
)
