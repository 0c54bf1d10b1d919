# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""CIFAR ResNets and Wide ResNets of the BSConv paper (Table 2).

Both backbones build every convolution -- the stem included -- with
``build_conv_layer(conv_cfg, ...)``, so ``conv_cfg=dict(type='BSConvU')``
(or ``'BSConvS'``, ``'DOConv'``) turns every regular 3x3 conv into the
efficient layer while the 1x1 projection shortcuts stay plain convs (the
layers fall back to a plain conv for 1x1 kernels). That is the paper's recipe
"replace the regular (groups = 1) 3x3 convs, keep the 1x1 convs".

The structures follow the reference implementation of the paper
(zeiss-microscopy/BSConv, ``bsconv/pytorch/resnet.py``) so that the parameter
counts of Table 2 are reproduced:

- :class:`CifarResNet` (He et al. 2016, CIFAR variant): a 3x3 stem conv of 16
  channels + BN + ReLU, three stages of ``n`` basic blocks with 16/32/64
  channels (depth ``6n + 2``), strides 1/2/2, and *projection* shortcuts
  (1x1 conv + BN) where the shape changes. Projection ("option B") shortcuts
  give the paper's 272.5K parameters for ResNet-20; the zero-padding identity
  shortcuts ("option A") of the original CIFAR ResNet would give 269.7K.
  It reuses mmpretrain's :class:`ResNet_CIFAR` (stem, ``BasicBlock``,
  ``ResLayer``, ``frozen_stages``, ``norm_eval``, ``with_cp``); only the
  depth rule and the channel widths are new.
- :class:`CifarWideResNet` (Zagoruyko & Komodakis 2016, WRN-d-k): a plain 3x3
  stem conv of 16 channels, three stages of ``n = (d - 4) / 6`` pre-activation
  wide basic blocks with ``16k``/``32k``/``64k`` channels, 1x1 conv
  projection shortcuts (applied to the pre-activated input) where the shape
  changes, optional dropout between the two 3x3 convs, and a final BN + ReLU.

The reference models additionally put a BatchNorm on the input image
(``data_bn``, 6 parameters); these backbones leave input normalisation to the
data preprocessor, so their classifiers have 6 parameters fewer than the
reference models (272,474 vs 272,480 for ResNet-20 on CIFAR-10).
"""
from collections.abc import Mapping
from numbers import Real
from typing import Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_conv_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.backbones.resnet import BasicBlock
from mmpretrain.models.backbones.resnet_cifar import ResNet_CIFAR

_NUM_STAGES = 3
_STAGE_CHANNELS = (16, 32, 64)
_STAGE_STRIDES = (1, 2, 2)
_DEFAULT_INIT_CFG = [
    dict(type='Kaiming', layer=['Conv2d']),
    dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
]


class _ThreeStageDepths(Mapping):
    """An ``arch_settings`` table for 3-stage CIFAR networks whose depth is
    ``6 * n + offset`` with ``n`` blocks per stage.

    It maps every valid depth to ``(block, (n, n, n))``; iterating yields the
    depths used in the papers. ``depth in table`` tells whether a depth is
    valid.

    Args:
        offset (int): Layers outside the residual blocks (2 for ResNets:
            stem + classifier; 4 for WRNs: stem, 2 shortcuts + classifier).
        block (type): The residual block class.
        common (Sequence[int]): Depths listed when the table is iterated.
    """

    def __init__(self, offset: int, block: type, common: Sequence[int]) -> None:
        self.offset = offset
        self.block = block
        self.common = tuple(common)

    def __contains__(self, depth) -> bool:
        return (isinstance(depth, int) and not isinstance(depth, bool)
                and depth >= 6 + self.offset and (depth - self.offset) % 6 == 0)

    def __getitem__(self, depth) -> Tuple[type, Tuple[int, int, int]]:
        if depth not in self:
            raise KeyError(depth)
        n = (depth - self.offset) // 6
        return self.block, (n, ) * _NUM_STAGES

    def __iter__(self) -> Iterator[int]:
        return iter(self.common)

    def __len__(self) -> int:
        return len(self.common)

    def __repr__(self) -> str:
        return f'{{6n + {self.offset}: ({self.block.__name__}, (n, n, n))}}'


def _check_out_indices(out_indices: Union[int, Sequence[int]],
                       num_stages: int) -> Tuple[int, ...]:
    if isinstance(out_indices, int):
        out_indices = (out_indices, )
    if not isinstance(out_indices, Sequence) or len(out_indices) == 0:
        raise ValueError('out_indices must be an int or a non-empty sequence of ints, '
                         f'got {out_indices!r}')
    result = []
    for index in out_indices:
        if not isinstance(index, int) or not -num_stages <= index < num_stages:
            raise ValueError(f'out_indices must contain stage indices in '
                             f'[{-num_stages}, {num_stages - 1}], got {out_indices!r}')
        result.append(index % num_stages)
    return tuple(result)


def _check_frozen_stages(frozen_stages: int, num_stages: int) -> None:
    if (not isinstance(frozen_stages, int) or isinstance(frozen_stages, bool)
            or not -1 <= frozen_stages <= num_stages):
        raise ValueError(f'frozen_stages must be an int in [-1, {num_stages}], '
                         f'got {frozen_stages!r}')


def _check_widen_factor(widen_factor) -> None:
    if (not isinstance(widen_factor, Real) or isinstance(widen_factor, bool)
            or widen_factor <= 0):
        raise ValueError(f'widen_factor must be a positive number, got {widen_factor!r}')


@MODELS.register_module()
class CifarResNet(ResNet_CIFAR):
    """ResNet for 32x32 inputs (He et al. 2016, §4.2), as in BSConv Table 2.

    Depth ``6n + 2``: a 3x3 stem conv (``stem_channels``) + BN + ReLU, then
    three stages of ``n`` basic blocks with ``base_channels * widen_factor``
    x 1/2/4 channels and strides 1/2/2; 1x1 conv + BN projection shortcuts
    where the shape changes. ResNet-20/56/110 (n = 3/9/18) are the paper's
    models; with ``conv_cfg=dict(type='BSConvU')`` every 3x3 conv (the stem
    included) becomes a BSConv-U while the 1x1 shortcuts stay plain.

    Built on mmpretrain's :class:`ResNet_CIFAR`, whose stem, ``BasicBlock``,
    ``ResLayer``, freezing and norm-eval logic it reuses.

    Args:
        depth (int): Network depth, ``6n + 2`` with ``n >= 1`` (20, 32, 44,
            56, 110, ...).
        widen_factor (float): Width multiplier of the stages; stage ``i`` has
            ``int(base_channels * widen_factor) * 2**i`` channels. The stem
            keeps ``stem_channels`` (as in the reference implementation).
            Defaults to 1.0.
        in_channels (int): Number of input image channels. Defaults to 3.
        stem_channels (int): Output channels of the stem conv. Defaults to 16.
        base_channels (int): Channels of the first stage before
            ``widen_factor``. Defaults to 16.
        out_indices (int | Sequence[int]): Stages (0, 1, 2; negative indices
            allowed) whose outputs are returned, as a tuple. Defaults to
            ``(2, )``.
        frozen_stages (int): Stages to freeze (parameters fixed, norm layers
            in eval mode): -1 freezes nothing, 0 the stem, ``i`` the stem and
            stages 1..i. Defaults to -1.
        conv_cfg (dict, optional): Config of every conv layer, e.g.
            ``dict(type='BSConvU')``. Defaults to None (``nn.Conv2d``).
        norm_cfg (dict): Config of the norm layers. Defaults to
            ``dict(type='BN', requires_grad=True)``.
        norm_eval (bool): Keep norm layers in eval mode during training
            (frozen running statistics). Defaults to False.
        with_cp (bool): Use gradient checkpointing in the blocks. Defaults to
            False.
        zero_init_residual (bool): Zero-initialise the last norm layer of each
            block. Defaults to True.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.0.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to Kaiming init of ``Conv2d`` layers and constant 1 of
            norm layers (``layer='Conv2d'`` reaches this package's conv layers
            too).
    """

    arch_settings = _ThreeStageDepths(offset=2, block=BasicBlock, common=(20, 32, 44, 56, 110))

    def __init__(self,
                 depth: int,
                 widen_factor: float = 1.0,
                 in_channels: int = 3,
                 stem_channels: int = 16,
                 base_channels: int = 16,
                 out_indices: Union[int, Sequence[int]] = (2, ),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 zero_init_residual: bool = True,
                 drop_path_rate: float = 0.0,
                 init_cfg: Optional[Union[dict, list]] = _DEFAULT_INIT_CFG) -> None:
        if depth not in self.arch_settings:
            raise ValueError('depth must be 6n + 2 with n >= 1 (e.g. 20, 32, 44, 56, 110), '
                             f'got {depth!r}')
        _check_widen_factor(widen_factor)
        _check_frozen_stages(frozen_stages, _NUM_STAGES)
        out_indices = _check_out_indices(out_indices, _NUM_STAGES)
        super().__init__(
            depth=depth,
            in_channels=in_channels,
            stem_channels=stem_channels,
            base_channels=int(base_channels * widen_factor),
            num_stages=_NUM_STAGES,
            strides=_STAGE_STRIDES,
            dilations=(1, ) * _NUM_STAGES,
            out_indices=out_indices,
            frozen_stages=frozen_stages,
            conv_cfg=conv_cfg,
            norm_cfg=norm_cfg,
            norm_eval=norm_eval,
            with_cp=with_cp,
            zero_init_residual=zero_init_residual,
            drop_path_rate=drop_path_rate,
            init_cfg=init_cfg)
        self.widen_factor = widen_factor

    def train(self, mode: bool = True) -> 'CifarResNet':
        """Upstream ``ResNet.train`` (freezing, ``norm_eval``), returning
        ``self`` as ``nn.Module.train`` does; upstream returns None, which
        breaks ``backbone.eval()`` chains."""
        super().train(mode)
        return self


class WideBasicBlock(BaseModule):
    """Pre-activation wide basic block of WRN-d-k.

    ``BN-ReLU -> conv3x3(stride) -> BN-ReLU -> [dropout] -> conv3x3``, plus the
    identity or, where the shape changes, a 1x1 conv projection (no norm) of
    the pre-activated input.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first 3x3 conv and of the projection.
            Defaults to 1.
        drop_rate (float): Dropout probability between the two convs.
            Defaults to 0.0 (no dropout layer).
        with_cp (bool): Use gradient checkpointing. Defaults to False.
        conv_cfg (dict, optional): Config of the conv layers. Defaults to
            None.
        norm_cfg (dict): Config of the norm layers. Defaults to
            ``dict(type='BN')``.
        act_cfg (dict): Config of the activation. Defaults to
            ``dict(type='ReLU', inplace=True)``.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 drop_rate: float = 0.0,
                 with_cp: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f'drop_rate must be in [0, 1), got {drop_rate!r}')
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.with_cp = with_cp

        self.norm1_name, norm1 = build_norm_layer(norm_cfg, in_channels, postfix=1)
        self.add_module(self.norm1_name, norm1)
        self.conv1 = build_conv_layer(
            conv_cfg, in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2_name, norm2 = build_norm_layer(norm_cfg, out_channels, postfix=2)
        self.add_module(self.norm2_name, norm2)
        self.dropout = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()
        self.conv2 = build_conv_layer(
            conv_cfg, out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.act = build_activation_layer(act_cfg)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = build_conv_layer(
                conv_cfg, in_channels, out_channels, 1, stride=stride, padding=0, bias=False)
        else:
            self.shortcut = None

    @property
    def norm1(self) -> nn.Module:
        return getattr(self, self.norm1_name)

    @property
    def norm2(self) -> nn.Module:
        return getattr(self, self.norm2_name)

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.norm1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.act(self.norm2(out))
        out = self.dropout(out)
        out = self.conv2(out)
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


@MODELS.register_module()
class CifarWideResNet(BaseBackbone):
    """Wide ResNet WRN-d-k for 32x32 inputs (Zagoruyko & Komodakis 2016), as
    in BSConv Table 2 (WRN-40-3, and WRN-40-8 with BSConv-U).

    A plain 3x3 stem conv (``stem_channels``), three stages of
    ``n = (depth - 4) / 6`` pre-activation :class:`WideBasicBlock` s with
    ``int(16k)``/``int(32k)``/``int(64k)`` channels and strides 1/2/2, then a
    final BN + ReLU. With ``conv_cfg=dict(type='BSConvU')`` every 3x3 conv
    (the stem included) becomes a BSConv-U while the 1x1 projection
    shortcuts stay plain.

    The output of the last stage is taken after the final BN + ReLU (the
    feature the classifier pools); outputs of earlier stages are the raw
    (pre-activation) sums of their last block.

    Args:
        depth (int): Network depth, ``6n + 4`` with ``n >= 1`` (16, 22, 28,
            40, ...).
        widen_factor (float): Width factor ``k``. Defaults to 1.
        in_channels (int): Number of input image channels. Defaults to 3.
        stem_channels (int): Output channels of the stem conv. Defaults to 16.
        drop_rate (float): Dropout probability inside each block (0.3 in the
            WRN paper; the BSConv reference uses none). Defaults to 0.0.
        out_indices (int | Sequence[int]): Stages (0, 1, 2; negative indices
            allowed) whose outputs are returned, as a tuple. Defaults to
            ``(2, )``.
        frozen_stages (int): Stages to freeze (parameters fixed, norm layers
            in eval mode): -1 freezes nothing, 0 the stem conv, ``i`` the stem
            and stages 1..i (3 includes the final norm). Defaults to -1.
        conv_cfg (dict, optional): Config of every conv layer. Defaults to
            None (``nn.Conv2d``).
        norm_cfg (dict): Config of the norm layers. Defaults to
            ``dict(type='BN', requires_grad=True)``.
        act_cfg (dict): Config of the activations. Defaults to
            ``dict(type='ReLU', inplace=True)``.
        norm_eval (bool): Keep norm layers in eval mode during training.
            Defaults to False.
        with_cp (bool): Use gradient checkpointing in the blocks. Defaults to
            False.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to Kaiming init of ``Conv2d`` layers and constant 1 of
            norm layers (``layer='Conv2d'`` reaches this package's conv layers
            too).
    """

    arch_settings = _ThreeStageDepths(offset=4, block=WideBasicBlock, common=(16, 22, 28, 40))

    def __init__(self,
                 depth: int,
                 widen_factor: float = 1,
                 in_channels: int = 3,
                 stem_channels: int = 16,
                 drop_rate: float = 0.0,
                 out_indices: Union[int, Sequence[int]] = (2, ),
                 frozen_stages: int = -1,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = _DEFAULT_INIT_CFG) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError('depth must be 6n + 4 with n >= 1 (e.g. 16, 22, 28, 40), '
                             f'got {depth!r}')
        _check_widen_factor(widen_factor)
        _check_frozen_stages(frozen_stages, _NUM_STAGES)
        self.depth = depth
        self.widen_factor = widen_factor
        self.out_indices = _check_out_indices(out_indices, _NUM_STAGES)
        self.frozen_stages = frozen_stages
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        block, self.stage_blocks = self.arch_settings[depth]
        stage_channels = [int(c * widen_factor) for c in _STAGE_CHANNELS]

        self.conv1 = build_conv_layer(
            conv_cfg, in_channels, stem_channels, 3, stride=1, padding=1, bias=False)
        self.res_layers = []
        channels = stem_channels
        for i, (num_blocks, out_channels, stride) in enumerate(
                zip(self.stage_blocks, stage_channels, _STAGE_STRIDES)):
            blocks = []
            for j in range(num_blocks):
                blocks.append(
                    block(
                        channels,
                        out_channels,
                        stride=stride if j == 0 else 1,
                        drop_rate=drop_rate,
                        with_cp=with_cp,
                        conv_cfg=conv_cfg,
                        norm_cfg=norm_cfg,
                        act_cfg=act_cfg))
                channels = out_channels
            layer_name = f'layer{i + 1}'
            self.add_module(layer_name, nn.Sequential(*blocks))
            self.res_layers.append(layer_name)
        self.final_norm_name, final_norm = build_norm_layer(norm_cfg, channels, postfix='_final')
        self.add_module(self.final_norm_name, final_norm)
        self.final_act = build_activation_layer(act_cfg)
        self.feat_dim = channels

        self._freeze_stages()

    @property
    def final_norm(self) -> nn.Module:
        return getattr(self, self.final_norm_name)

    def _freeze_stages(self) -> None:
        frozen = []
        if self.frozen_stages >= 0:
            frozen.append(self.conv1)
        frozen += [getattr(self, f'layer{i}') for i in range(1, self.frozen_stages + 1)]
        if self.frozen_stages == _NUM_STAGES:
            frozen.append(self.final_norm)
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i == _NUM_STAGES - 1:
                x = self.final_act(self.final_norm(x))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True) -> 'CifarWideResNet':
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
