# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The conv layers: each an ``nn.Conv2d``-compatible layer registered in
mmengine's root ``MODELS``, usable as ``conv_cfg=dict(type=...)``."""
from .base import EfficientConv2d
from .batch_norm_act import FusedConvModule
from .bsconv import BSConvS, BSConvU
from .doconv import DOConv
from .kernel_cache import cached_kernels
from .mix_pointwise import MixGroupedPointwise
from .mixconv import MixConv, split_channels


def __getattr__(name):
    # switch_to_deploy lives in mm_efficientconv.deploy (layers import nothing from the rest of the
    # package); this name resolves on first access so old imports keep working
    if name == 'switch_to_deploy':
        from . import deploy
        return deploy.switch_to_deploy
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'EfficientConv2d', 'BSConvU', 'BSConvS', 'MixConv', 'MixGroupedPointwise', 'DOConv',
    'split_channels', 'switch_to_deploy', 'cached_kernels', 'FusedConvModule'
]
