# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The conv layers: each an ``nn.Conv2d``-compatible layer registered in
mmengine's root ``MODELS``, usable as ``conv_cfg=dict(type=...)``."""
from .base import EfficientConv2d
from .bsconv import BSConvS, BSConvU
from .deploy import switch_to_deploy
from .doconv import DOConv
from .kernel_cache import cached_kernels
from .mix_pointwise import MixGroupedPointwise
from .mixconv import MixConv, split_channels

__all__ = [
    'EfficientConv2d', 'BSConvU', 'BSConvS', 'MixConv', 'MixGroupedPointwise', 'DOConv',
    'split_channels', 'switch_to_deploy', 'cached_kernels'
]
