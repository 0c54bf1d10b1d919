# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv: BSConv, MixConv/MixNet and DO-Conv for OpenMMLab 2.x.

Importing the package (directly, or through a config's
``custom_imports=dict(imports=['mm_efficientconv'])``) registers every layer,
backbone, head, hook, dataset and transform in mmengine's root registries, so
that configs whose default scope is mmpretrain, mmdet or mmseg find them, and
applies the pinned stack's compatibility fixes where they are needed
(:mod:`.compat`). It imports neither mmdet nor mmseg.
"""
from . import compat

compat.apply()

with compat.codebases_deferred():  # mmpretrain's optional mmdet import waits for mmdet
    from . import backbones, datasets, deploy, heads, hooks, layers  # noqa: E402,F401
    from .deploy import switch_to_deploy  # noqa: E402
    from .hooks import KernelCacheHook  # noqa: E402
    from .layers import (BSConvS, BSConvU, DOConv, MixConv, MixGroupedPointwise,  # noqa: E402
                         cached_kernels)

__version__ = '0.1.0'

__all__ = [
    'BSConvU', 'BSConvS', 'MixConv', 'MixGroupedPointwise', 'DOConv', 'switch_to_deploy',
    'cached_kernels', 'KernelCacheHook', '__version__'
]
