# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""MobileNetV2 with the BSConv-S regulariser (Haase & Amthor, CVPR 2020,
section 4.2).

The linear bottleneck of MobileNetV2 already is a (shifted) BSConv-S: its
projection 1x1 conv (``expanded -> bottleneck`` channels, ``p = 1/6`` with
expansion 6) plays the role of the subspace projection ``W_B``. The BSConv-S
variant therefore keeps the architecture unchanged and only adds the
orthonormal regulariser ``sum_blocks ||W W^T - I||_F`` on every block's
projection weight ``W`` (viewed ``(bottleneck_out, expanded_in)``).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.registry import MODELS
from mmpretrain.models.backbones.mobilenet_v2 import InvertedResidual, MobileNetV2

from mm_efficientconv.layers.utils import orthonormal_penalty


def sum_orthonormal_penalties(convs: Sequence[nn.Module]) -> torch.Tensor:
    """Sum of :func:`orthonormal_penalty` over the ``weight`` of ``convs``
    (an fp32 scalar)."""
    return torch.stack([orthonormal_penalty(conv.weight) for conv in convs]).sum()


def init_projections_orthonormal(backbone) -> None:
    """Gives every projection conv of a BSConv-S backbone orthonormal rows
    (``nn.init.orthogonal_``), unless the backbone loads a ``Pretrained``
    ``init_cfg``.

    mmpretrain's Kaiming (fan-out) init gives the ``(out, in)`` projection
    rows a squared norm of ``2 * in / out`` (12 for expansion 6), so the
    regulariser would start near ``sqrt(out) * 11`` per block (``loss_ortho``
    ~97 against ``loss_cls`` ~4.8 on MobileNetV3-large). Each projection is
    followed by a BatchNorm, so its scale does not change the network's
    function in training; orthonormal rows start the regulariser at its
    optimum (0) instead.
    """
    cfgs = backbone.init_cfg if isinstance(backbone.init_cfg, list) else [backbone.init_cfg]
    if any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs):
        return
    for conv in backbone.projection_convs():
        nn.init.orthogonal_(conv.weight)


@MODELS.register_module()
class BSConvSMobileNetV2(MobileNetV2):
    """mmpretrain's ``MobileNetV2`` as its BSConv-S variant (BSConv paper,
    section 4.2).

    The network is parameter-for-parameter and key-for-key mmpretrain's
    ``MobileNetV2`` (its checkpoints load strictly, in both directions); the
    only addition is :meth:`reg_loss`, the orthonormal regulariser on every
    inverted residual block's projection 1x1 conv, which ``OrthoRegHook``
    scales by ``alpha`` and adds to the training loss. With expansion 6 the
    projection has exactly ``p = 1/6`` of the expanded channels as rows, the
    paper's BSConv-S setting.

    ``reg_loss`` is collected once: the hook calls ``reg_loss()`` of every
    module that has one, and the projection convs are ``ConvModule``-wrapped
    convs without a ``reg_loss`` of their own. Only if ``conv_cfg`` selects a
    conv that has its own ``reg_loss`` (e.g. ``BSConvS``) would that layer's
    penalty be added as well, on a different weight.

    Other conv types work through ``conv_cfg`` as in mmpretrain, e.g.
    ``conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5, 7))`` gives the MixConv
    paper's MobileNetV2 "mixconv357" (depthwise convs mixed, the other convs
    plain); the regulariser then reads the effective 1x1 ``weight`` of the
    projection conv.

    Args:
        widen_factor (float): Width multiplier. Defaults to 1.0.
        out_indices (Sequence[int]): Output stages, in ``range(0, 8)``
            (``layer1`` ... ``layer7``, ``conv2``). Defaults to ``(7, )``.
        frozen_stages (int): Stages to freeze, in ``range(-1, 8)``; unlike
            mmpretrain's ``MobileNetV2`` the frozen stem's norm layer is put in
            eval mode too. Defaults to -1.
        conv_cfg (dict, optional): Config of every conv. Defaults to None.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='ReLU6')``.
        norm_eval (bool): Keep norm layers in eval mode during training.
            Defaults to False.
        with_cp (bool): Use activation checkpointing. Defaults to False.
        cifar (bool): Stride 1 in the stem and in the first stride-2 stage
            (``layer2``), as the BSConv paper does for MobileNets on CIFAR:
            a 32x32 input ends at 4x4. The parameters are unchanged.
            Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to mmpretrain ``MobileNetV2``'s; the projection convs
            then get orthonormal rows (unless ``Pretrained``).
    """

    def __init__(self,
                 widen_factor: float = 1.,
                 out_indices: Sequence[int] = (7, ),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU6'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 cifar: bool = False,
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d']),
                     dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
                 ]) -> None:
        if not isinstance(cifar, bool):
            raise ValueError(f'cifar must be a bool, got {cifar!r}')
        super().__init__(
            widen_factor=widen_factor,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            norm_eval=norm_eval,
            with_cp=with_cp,
            init_cfg=init_cfg)
        self.cifar = cifar
        if cifar:
            self._remove_first_strides()

    def _remove_first_strides(self) -> None:
        """Rebuilds the stem and the first block of the first stride-2 stage
        with stride 1 (same modules, names and parameter shapes)."""
        self.conv1 = ConvModule(
            3,
            self.conv1.out_channels,
            3,
            stride=1,
            padding=1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        stage = next(i for i, cfg in enumerate(self.arch_settings) if cfg[3] == 2)
        layer = getattr(self, self.layers[stage])
        old = layer[0]
        layer[0] = InvertedResidual(
            old.conv[0].in_channels,
            old.conv[-1].out_channels,
            1,
            expand_ratio=self.arch_settings[stage][0],
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
            with_cp=self.with_cp)

    def projection_convs(self) -> List[nn.Module]:
        """The projection (last, linear) 1x1 conv of every inverted residual
        block, in network order."""
        return [m.conv[-1].conv for m in self.modules() if isinstance(m, InvertedResidual)]

    def reg_loss(self) -> torch.Tensor:
        """BSConv-S orthonormal regulariser: ``sum_blocks ||W W^T - I||_F``
        over the projection weight ``W`` ``(bottleneck_out, expanded_in)`` of
        every inverted residual block, in fp32 (not yet scaled by ``alpha``;
        the reference sums the unsquared norms, as here).

        Returns:
            Tensor: A differentiable fp32 scalar.
        """
        return sum_orthonormal_penalties(self.projection_convs())

    def init_weights(self) -> None:
        """mmpretrain's init, then orthonormal projection rows (see
        :func:`init_projections_orthonormal`)."""
        super().init_weights()
        init_projections_orthonormal(self)

    def _freeze_stages(self) -> None:
        super()._freeze_stages()
        if self.frozen_stages >= 0:
            self.conv1.eval()
