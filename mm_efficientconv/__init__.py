# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv: BSConv, MixConv/MixNet and DO-Conv for OpenMMLab 2.x.

Importing the package (directly, or through a config's
``custom_imports=dict(imports=['mm_efficientconv'])``) applies the pinned
stack's compatibility fixes and registers every layer, backbone, head, hook,
dataset and transform in mmengine's root registries, so that configs whose
default scope is mmpretrain, mmdet or mmseg find them.
"""
from . import compat

compat.apply()

from . import backbones, datasets, heads, hooks, layers  # noqa: E402,F401
from .layers import (BSConvS, BSConvU, DOConv, MixConv, MixGroupedPointwise,  # noqa: E402
                     switch_to_deploy)

__version__ = '0.1.0'

__all__ = [
    'BSConvU', 'BSConvS', 'MixConv', 'MixGroupedPointwise', 'DOConv', 'switch_to_deploy',
    '__version__'
]
