from setuptools import find_packages, setup


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


setup(
    name='mm_efficientconv',
    version='0.1.0',
    description='BSConv, MixConv/MixNet and DO-Conv as OpenMMLab 2.x components',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mm_efficientconv', 'mm_efficientconv.*']),
    python_requires='>=3.8',
    install_requires=['mmengine>=0.10.0,<1.0', 'mmcv>=2.0.0,<2.2.0', 'mmpretrain>=1.0.0'],
    extras_require={
        'codebases': ['mmdet==3.3.0', 'mmsegmentation==1.2.2', 'ftfy', 'regex'],
        'tests': ['pytest', 'onnx', 'onnxruntime', 'scikit-learn'],
    },
    license='Apache License 2.0',
)
