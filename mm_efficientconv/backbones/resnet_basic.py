# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""ImageNet ResNets built from basic blocks, at the depths the BSConv paper
and its reference implementation use (10, 18, 26, 34, 68, 102).

:class:`BasicBlockResNet` is mmpretrain's :class:`ResNet` with a different
``arch_settings`` table; stem, ``BasicBlock``, ``ResLayer``, freezing,
``norm_eval``, ``with_cp`` and stochastic depth are upstream's. Every conv,
the 7x7 stem included, is built from ``conv_cfg``, so
``conv_cfg=dict(type='BSConvU')`` (or ``'BSConvS'``, ``'DOConv'``) converts
all convs with a spatial kernel while the 1x1 downsample convs stay plain.
Unlike the reference implementation (whose replacer converts only 3x3 and
5x5 kernels), the 7x7 stem conv is converted too.

Bottleneck ResNets (ResNet-50/101/152, e.g. for detection or segmentation)
need nothing from this package: use the upstream backbones (mmpretrain
``ResNet``, mmdet ``ResNet``, mmseg ``ResNetV1c``) and set their ``conv_cfg``,
e.g. ``backbone=dict(type='ResNet', depth=50, conv_cfg=dict(type='DOConv'))``.
"""
from mmengine.registry import MODELS
from mmpretrain.models.backbones.resnet import BasicBlock, ResNet


@MODELS.register_module()
class BasicBlockResNet(ResNet):
    """ResNet of basic blocks for 224x224 inputs, depth 10/18/26/34/68/102.

    Blocks per stage (``depth = 2 * sum + 2``): 10: (1, 1, 1, 1),
    18: (2, 2, 2, 2), 26: (3, 3, 3, 3), 34: (3, 4, 6, 3), 68: (3, 4, 23, 3),
    102: (3, 8, 36, 3). Depths 18 and 34 are identical to mmpretrain's
    ResNet-18/34 (same modules, same state-dict keys).

    Args:
        depth (int): Network depth, one of 10, 18, 26, 34, 68, 102.
        **kwargs: Every other argument of mmpretrain's ``ResNet``, with its
            defaults: ``in_channels=3``, ``stem_channels=64``,
            ``base_channels=64``, ``num_stages=4``, ``strides=(1, 2, 2, 2)``,
            ``dilations=(1, 1, 1, 1)``, ``out_indices=(3, )``,
            ``style='pytorch'``, ``deep_stem=False``, ``avg_down=False``,
            ``frozen_stages=-1``, ``conv_cfg=None``,
            ``norm_cfg=dict(type='BN', requires_grad=True)``,
            ``norm_eval=False``, ``with_cp=False``,
            ``zero_init_residual=True``, ``drop_path_rate=0.0`` and an
            ``init_cfg`` of Kaiming (``Conv2d``) and constant (norm) init.
    """

    arch_settings = {
        10: (BasicBlock, (1, 1, 1, 1)),
        18: (BasicBlock, (2, 2, 2, 2)),
        26: (BasicBlock, (3, 3, 3, 3)),
        34: (BasicBlock, (3, 4, 6, 3)),
        68: (BasicBlock, (3, 4, 23, 3)),
        102: (BasicBlock, (3, 8, 36, 3)),
    }

    def __init__(self, depth: int, **kwargs) -> None:
        if depth not in self.arch_settings:
            raise ValueError(f'depth must be one of {sorted(self.arch_settings)}, got {depth!r}')
        super().__init__(depth, **kwargs)

    def train(self, mode: bool = True) -> 'BasicBlockResNet':
        """Upstream ``ResNet.train`` (freezing, ``norm_eval``), returning
        ``self`` as ``nn.Module.train`` does; upstream returns None, which
        breaks ``backbone.eval()`` chains."""
        super().train(mode)
        return self
