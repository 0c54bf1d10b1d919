# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""MobileNetV1 (Howard et al., 2017), with the BSConv-U variant of Haase &
Amthor (CVPR 2020, section 4.1) and MixConv depthwise kernels (Tan & Le,
BMVC 2019) selectable by config.

OpenMMLab has no MobileNetV1; this backbone follows mmpretrain's
``MobileNetV2`` conventions (``widen_factor``, ``out_indices``,
``frozen_stages``, ``norm_eval``, ``with_cp``, init) so that it can be used in
mmpretrain classifiers, mmdet detectors and mmseg segmentors alike.
"""
import copy
import numbers
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import make_divisible
from torch.nn.modules.batchnorm import _BatchNorm

_BLOCK_TYPES = ('dsc', 'bsconvu')


class _CheckpointedBlock(BaseModule):
    """A block whose forward may be wrapped in activation checkpointing."""

    def __init__(self, with_cp: bool = False, init_cfg=None) -> None:
        super().__init__(init_cfg)
        self.with_cp = with_cp

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


class DepthwiseSeparableBlock(_CheckpointedBlock):
    """The MobileNetV1 block: 3x3 depthwise conv - norm - act, then 1x1
    pointwise conv - norm - act.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the depthwise conv. Defaults to 1.
        conv_cfg (dict, optional): Config of the pointwise conv. Defaults to
            None (``nn.Conv2d``).
        dw_conv_cfg (dict, optional): Config of the depthwise conv. Defaults
            to None (``nn.Conv2d``).
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='ReLU')``.
        with_cp (bool): Use activation checkpointing. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 conv_cfg: Optional[dict] = None,
                 dw_conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 with_cp: bool = False,
                 init_cfg=None) -> None:
        super().__init__(with_cp, init_cfg)
        self.depthwise_conv = ConvModule(
            in_channels,
            in_channels,
            3,
            stride=stride,
            padding=1,
            groups=in_channels,
            conv_cfg=dw_conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        self.pointwise_conv = ConvModule(
            in_channels,
            out_channels,
            1,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class BSConvUBlock(_CheckpointedBlock):
    """The BSConv-U replacement of a MobileNetV1 block (BSConv paper, section
    4.1): a ``BSConvU`` (1x1 pointwise conv, then 3x3 depthwise conv, no norm
    or activation in between), followed by one norm and one activation.

    The block has the parameters of a DSC block up to the depthwise kernel and
    one norm layer now sitting on ``out_channels`` instead of ``in_channels``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the depthwise part. Defaults to 1.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='ReLU')``.
        with_cp (bool): Use activation checkpointing. Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 with_cp: bool = False,
                 init_cfg=None) -> None:
        super().__init__(with_cp, init_cfg)
        self.conv = ConvModule(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=1,
            conv_cfg=dict(type='BSConvU'),
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@MODELS.register_module()
class MobileNetV1(BaseBackbone):
    """MobileNetV1 backbone, optionally with BSConv-U blocks or MixConv
    depthwise kernels.

    Layout (``widen_factor`` = 1.0; output stride for a 224x224 input):

    =======  ===========  ====================================  ======
    module   out_indices  blocks: (out channels, stride)        stride
    =======  ===========  ====================================  ======
    conv1    -            stem 3x3 conv: (32, 2)                /2
    layer1   0            block 1: (64, 1)                      /2
    layer2   1            blocks 2-3: (128, 2), (128, 1)        /4
    layer3   2            blocks 4-5: (256, 2), (256, 1)        /8
    layer4   3            blocks 6-11: (512, 2), (512, 1) x 5   /16
    layer5   4            blocks 12-13: (1024, 2), (1024, 1)    /32
    =======  ===========  ====================================  ======

    With ``cifar=True`` the strides of ``conv1`` and of the first block of
    ``layer2`` become 1 (as in the BSConv paper's CIFAR MobileNets), so the
    stages end at output strides 1, 1, 2, 4, 8 and a 32x32 input ends at 4x4.

    Channels are ``make_divisible(c * widen_factor, 8)`` (mmpretrain's
    rounding), which equals the paper's ``int(c * widen_factor)`` for the
    multipliers 0.25, 0.5, 0.75 and 1.0.

    Args:
        widen_factor (float): Width multiplier, any number > 0; the paper uses
            0.25, 0.5, 0.75 and 1.0. Defaults to 1.0.
        block_type (str): ``'dsc'`` for the original depthwise-separable block
            (3x3 depthwise conv - norm - act, 1x1 conv - norm - act) or
            ``'bsconvu'`` for the BSConv-U block (``BSConvU`` conv, i.e. 1x1
            conv then 3x3 depthwise conv, followed by one norm and act).
            Defaults to ``'dsc'``.
        out_indices (Sequence[int]): Stages (0-4, see the table) whose outputs
            are returned, in stage order. Defaults to ``(4, )``.
        frozen_stages (int): -1 freezes nothing, 0 freezes ``conv1``, k >= 1
            freezes ``conv1`` and ``layer1`` ... ``layer{k}`` (parameters
            fixed, norm layers in eval mode). Defaults to -1.
        conv_cfg (dict, optional): Config of every conv (stem, depthwise and
            pointwise convs), e.g. ``dict(type='MixConv', kernel_sizes=(3, 5,
            7))`` makes the depthwise convs MixConvs (a MixConv is a plain
            conv at the other call sites). With ``block_type='bsconvu'`` it
            applies to the stem only: the blocks always use ``BSConvU``.
            Defaults to None (``nn.Conv2d``).
        dw_conv_cfg (dict, optional): Config of the depthwise convs only,
            overriding ``conv_cfg`` there (use ``dict(type='Conv2d')`` for
            plain depthwise convs under a custom ``conv_cfg``). Only valid with
            ``block_type='dsc'``. Defaults to None (use ``conv_cfg``).
        cifar (bool): Remove the strides of the stem and of the first stride-2
            block (CIFAR-sized inputs). Defaults to False.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='ReLU')``.
        norm_eval (bool): Keep norm layers in eval mode during training
            (frozen running statistics). Defaults to False.
        with_cp (bool): Use activation checkpointing in every block. Defaults
            to False.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to Kaiming init of ``Conv2d`` layers and constant 1 for
            norm layers (as mmpretrain's ``MobileNetV2``); ``layer='Conv2d'``
            reaches the conv layers of this package too.
    """

    # Per stage: [out_channels, num_blocks, stride of the first block].
    arch_settings = [[64, 1, 1], [128, 2, 2], [256, 2, 2], [512, 6, 2], [1024, 2, 2]]
    stem_channels = 32
    num_stages = len(arch_settings)

    def __init__(self,
                 widen_factor: float = 1.0,
                 block_type: str = 'dsc',
                 out_indices: Sequence[int] = (4, ),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 dw_conv_cfg: Optional[dict] = None,
                 cifar: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg=[
                     dict(type='Kaiming', layer=['Conv2d']),
                     dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
                 ]) -> None:
        super().__init__(init_cfg)
        if (not isinstance(widen_factor, numbers.Real) or isinstance(widen_factor, bool)
                or not widen_factor > 0):
            raise ValueError('widen_factor must be a number > 0 (the paper uses 0.25, 0.5, '
                             f'0.75 or 1.0), got {widen_factor!r}')
        if block_type not in _BLOCK_TYPES:
            raise ValueError(f'block_type must be one of {_BLOCK_TYPES}, got {block_type!r}')
        if isinstance(out_indices, int) or not isinstance(out_indices, Sequence) \
                or len(out_indices) == 0:
            raise ValueError('out_indices must be a non-empty sequence of ints in '
                             f'range(0, {self.num_stages}), got {out_indices!r}')
        for index in out_indices:
            if not isinstance(index, int) or index not in range(self.num_stages):
                raise ValueError('out_indices must be a non-empty sequence of ints in '
                                 f'range(0, {self.num_stages}), got {out_indices!r}')
        if not isinstance(frozen_stages, int) or \
                frozen_stages not in range(-1, self.num_stages + 1):
            raise ValueError(f'frozen_stages must be an int in range(-1, {self.num_stages + 1}),'
                             f' got {frozen_stages!r}')
        if dw_conv_cfg is not None and block_type != 'dsc':
            raise ValueError("dw_conv_cfg is only used with block_type='dsc' (BSConv-U blocks "
                             f'always use BSConvU), got dw_conv_cfg={dw_conv_cfg!r} with '
                             f'block_type={block_type!r}')

        self.widen_factor = widen_factor
        self.block_type = block_type
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.conv_cfg = copy.deepcopy(conv_cfg)
        self.dw_conv_cfg = copy.deepcopy(dw_conv_cfg if dw_conv_cfg is not None else conv_cfg)
        self.cifar = cifar
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp

        in_channels = make_divisible(self.stem_channels * widen_factor, 8)
        self.conv1 = ConvModule(
            3,
            in_channels,
            3,
            stride=1 if cifar else 2,
            padding=1,
            conv_cfg=self.conv_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)

        self.layers = []
        self.stage_channels = []
        first_stride_removed = not cifar
        for i, (channels, num_blocks, stride) in enumerate(self.arch_settings):
            out_channels = make_divisible(channels * widen_factor, 8)
            if stride == 2 and not first_stride_removed:
                stride, first_stride_removed = 1, True
            blocks = []
            for j in range(num_blocks):
                blocks.append(self._make_block(in_channels, out_channels, stride if j == 0 else 1))
                in_channels = out_channels
            layer_name = f'layer{i + 1}'
            self.add_module(layer_name, nn.Sequential(*blocks))
            self.layers.append(layer_name)
            self.stage_channels.append(out_channels)
        self.stage_channels = tuple(self.stage_channels)

    def _make_block(self, in_channels: int, out_channels: int, stride: int) -> nn.Module:
        if self.block_type == 'bsconvu':
            return BSConvUBlock(
                in_channels,
                out_channels,
                stride,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg,
                with_cp=self.with_cp)
        return DepthwiseSeparableBlock(
            in_channels,
            out_channels,
            stride,
            conv_cfg=self.conv_cfg,
            dw_conv_cfg=self.dw_conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
            with_cp=self.with_cp)

    def forward(self, x: torch.Tensor) -> tuple:
        x = self.conv1(x)
        outs = []
        for i, layer_name in enumerate(self.layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.conv1]
        frozen += [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'MobileNetV1':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
