# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv: BSConv, MixConv/MixNet and DO-Conv for OpenMMLab 2.x.

Importing the package (directly, or through a config's
``custom_imports=dict(imports=['mm_efficientconv'])``) applies the pinned
stack's compatibility fixes and registers every layer, backbone and hook in
mmengine's root registries, so configs of mmpretrain, mmdet and mmseg find
them.
"""
from . import compat

compat.apply()

__version__ = '0.1.0'
