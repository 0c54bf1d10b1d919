# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""MobileNetV3 with the BSConv-S regulariser (Haase & Amthor, CVPR 2020,
section 4.2): mmpretrain's ``MobileNetV3`` unchanged, plus the orthonormal
regulariser on every inverted residual block's projection 1x1 conv."""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.registry import MODELS
from mmpretrain.models.backbones.mobilenet_v3 import MobileNetV3
from mmpretrain.models.utils import InvertedResidual

from mm_efficientconv.backbones.mobilenet_v2_bsconvs import (init_projections_orthonormal,
                                                             sum_orthonormal_penalties)


@MODELS.register_module()
class BSConvSMobileNetV3(MobileNetV3):
    """mmpretrain's ``MobileNetV3`` as its BSConv-S variant (BSConv paper,
    section 4.2).

    Parameter-for-parameter and key-for-key mmpretrain's ``MobileNetV3`` (its
    checkpoints load strictly); adds :meth:`reg_loss`, the orthonormal
    regulariser on the projection conv (``linear_conv``, viewed
    ``(out_channels, mid_channels)``) of every inverted residual block, which
    ``OrthoRegHook`` scales by ``alpha`` and adds to the training loss. The
    projection convs have no ``reg_loss`` of their own, so nothing is counted
    twice (unless ``conv_cfg`` selects a conv type that has one, e.g.
    ``BSConvS``, whose own penalty is then added too).

    Args:
        arch (str): ``'small'``, ``'small_075'``, ``'small_050'`` or
            ``'large'``. Defaults to ``'small'``.
        conv_cfg (dict, optional): Config of every conv. Defaults to None.
        norm_cfg (dict): Norm layer config. Defaults to
            ``dict(type='BN', eps=0.001, momentum=0.01)``.
        out_indices (Sequence[int], optional): Output layers (``layer0`` is
            the stem, the last one the final 1x1 conv). Defaults to None (the
            last layer).
        frozen_stages (int): Layers ``layer0`` ... ``layer{frozen_stages}``
            are frozen. Defaults to -1.
        norm_eval (bool): Keep norm layers in eval mode during training.
            Defaults to False.
        with_cp (bool): Use activation checkpointing. Defaults to False.
        cifar (bool): Stride 1 in the stem (``layer0``) and in the first
            stride-2 block (``layer1`` for the small archs, ``layer2`` for
            large), as the BSConv paper does for MobileNets on CIFAR: a 32x32
            input ends at 4x4. That block then gets its residual shortcut when
            its input and output widths agree (``small``: 16 -> 16), as in the
            reference implementation; the parameters are unchanged.
            Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to mmpretrain ``MobileNetV3``'s; the projection convs
            then get orthonormal rows (unless ``Pretrained``).
    """

    def __init__(self,
                 arch: str = 'small',
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', eps=0.001, momentum=0.01),
                 out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 cifar: bool = False,
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d'], nonlinearity='leaky_relu'),
                     dict(type='Normal', layer=['Linear'], std=0.01),
                     dict(type='Constant', layer=['BatchNorm2d'], val=1)
                 ]) -> None:
        if arch not in self.arch_settings:
            raise ValueError(f'arch must be one of {tuple(self.arch_settings)}, got {arch!r}')
        if not isinstance(cifar, bool):
            raise ValueError(f'cifar must be a bool, got {cifar!r}')
        super().__init__(
            arch=arch,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            with_cp=with_cp,
            init_cfg=init_cfg)
        self.cifar = cifar
        if cifar:
            self._remove_first_strides()

    def _remove_first_strides(self) -> None:
        """Rebuilds the stem and the first stride-2 block with stride 1 (same
        modules, names and parameter shapes)."""
        self.layer0 = ConvModule(
            3,
            self.layer0.out_channels,
            3,
            stride=1,
            padding=1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=dict(type='HSwish'))
        settings = self.arch_settings[self.arch]
        index = next(i for i, cfg in enumerate(settings) if cfg[5] == 2)
        kernel_size, mid_channels, out_channels, with_se, act, _ = settings[index]
        se_cfg = None
        if with_se:
            se_cfg = dict(
                channels=mid_channels,
                ratio=4,
                act_cfg=(dict(type='ReLU'),
                         dict(type='HSigmoid', bias=3, divisor=6, min_value=0, max_value=1)))
        new = InvertedResidual(
            in_channels=self.layer0.out_channels if index == 0 else settings[index - 1][2],
            out_channels=out_channels,
            mid_channels=mid_channels,
            kernel_size=kernel_size,
            stride=1,
            se_cfg=se_cfg,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=dict(type=act),
            with_cp=self.with_cp)
        setattr(self, f'layer{index + 1}', new)

    def projection_convs(self) -> List[nn.Module]:
        """The projection (``linear_conv``) 1x1 conv of every inverted
        residual block, in network order."""
        return [m.linear_conv.conv for m in self.modules() if isinstance(m, InvertedResidual)]

    def reg_loss(self) -> torch.Tensor:
        """BSConv-S orthonormal regulariser: ``sum_blocks ||W W^T - I||_F``
        over the projection weight ``W`` ``(out, mid)`` of every inverted
        residual block, in fp32 (not yet scaled by ``alpha``).

        Returns:
            Tensor: A differentiable fp32 scalar.
        """
        return sum_orthonormal_penalties(self.projection_convs())

    def init_weights(self) -> None:
        """mmpretrain's init, then orthonormal projection rows (see
        :func:`~mm_efficientconv.backbones.mobilenet_v2_bsconvs.init_projections_orthonormal`)."""
        super().init_weights()
        init_projections_orthonormal(self)
