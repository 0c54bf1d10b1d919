# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Blocks shared by the backbones of this package.

:class:`MixInvertedResidual` is the MixNet block (Tan & Le, BMVC 2019): a
MobileNetV2 inverted residual whose depthwise conv is a MixConv, whose 1x1
expand / project convs may be split into channel groups, and whose SE
squeeze width is relative to the block *input* channels. It is a plain
(unregistered) module, built by :class:`~mm_efficientconv.backbones.mixnet.MixNet`
and reusable by any backbone.
"""
import copy
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmpretrain.models.utils import SELayer

from mm_efficientconv.layers.batch_norm_act import FusedConvModule


def _as_kernel_sizes(kernel_sizes: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    if isinstance(kernel_sizes, int) and not isinstance(kernel_sizes, bool):
        kernel_sizes = (kernel_sizes, )
    try:
        sizes = tuple(kernel_sizes)
    except TypeError:
        sizes = ()
    if not sizes or not all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 and k % 2 == 1
            for k in sizes):
        raise ValueError(f'kernel_sizes must be an odd int or a non-empty sequence of odd ints, '
                         f'got {kernel_sizes!r}')
    return sizes


def _check_positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'{name} must be a positive int, got {value!r}')
    return value


class MixInvertedResidual(BaseModule):
    """MixNet inverted residual block.

    ``expand 1x1 conv - norm - act`` (skipped when ``expand_ratio == 1``: the
    depthwise-separable block), ``MixConv depthwise - norm - act``, optional
    squeeze-and-excitation, ``project 1x1 conv - norm``; identity shortcut
    (with optional drop path) when ``stride == 1`` and
    ``in_channels == out_channels``.

    Convs are built with :class:`~mm_efficientconv.layers.batch_norm_act.FusedConvModule`
    (mmcv's ``ConvModule``; a stock BatchNorm + ReLU/SiLU train as one fused
    CPU op):

    * the depthwise conv uses ``mixconv_cfg`` (with ``kernel_sizes`` set) when
      there are several kernel sizes, otherwise ``conv_cfg`` (a single-kernel
      MixConv *is* a depthwise conv);
    * an expand / project conv with ``n > 1`` splits uses ``pw_conv_cfg``
      (with ``num_splits=n``: TF MixNet's grouped 1x1 conv), otherwise
      ``conv_cfg``;
    * the SE layer is mmpretrain's ``SELayer`` with ``squeeze_channels =
      max(1, int(in_channels * se_ratio))``, the block activation and a
      sigmoid gate (the TF MixNet rule: the ratio refers to the block input,
      not to the expanded channels).

    Sub-module names follow mmpretrain's ``InvertedResidual``:
    ``expand_conv``, ``depthwise_conv``, ``se``, ``linear_conv``.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_sizes (int | Sequence[int]): Odd kernel size(s) of the mixed
            depthwise conv, e.g. ``(3, 5, 7)``. Defaults to 3.
        stride (int): Stride of the depthwise conv (1 or 2). Defaults to 1.
        expand_ratio (float): Expanded channels are
            ``int(in_channels * expand_ratio)``; 1 gives the
            depthwise-separable block without expand conv. Defaults to 1.
        se_ratio (float, optional): SE squeeze ratio relative to
            ``in_channels``; None or 0 disables SE. Defaults to None.
        expand_splits (int): Channel splits of the expand 1x1 conv.
            Defaults to 1.
        project_splits (int): Channel splits of the project 1x1 conv.
            Defaults to 1.
        conv_cfg (dict, optional): Config of plain convs (ungrouped 1x1,
            single-kernel depthwise, SE). Defaults to None (``nn.Conv2d``).
        mixconv_cfg (dict): Config of multi-kernel depthwise convs; its
            ``kernel_sizes`` is set by the block. Defaults to
            ``dict(type='MixConv')``.
        pw_conv_cfg (dict): Config of split 1x1 convs; its ``num_splits`` is
            set by the block. Defaults to ``dict(type='MixGroupedPointwise')``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        act_cfg (dict): Activation of the expand / depthwise convs and of the
            SE squeeze. Defaults to ``dict(type='ReLU')``.
        drop_path_rate (float): Stochastic depth rate of the residual branch.
            Defaults to 0.
        with_cp (bool): Use activation checkpointing (saves memory, costs
            a second forward). Defaults to False.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_sizes: Union[int, Sequence[int]] = 3,
                 stride: int = 1,
                 expand_ratio: float = 1,
                 se_ratio: Optional[float] = None,
                 expand_splits: int = 1,
                 project_splits: int = 1,
                 conv_cfg: Optional[dict] = None,
                 mixconv_cfg: dict = dict(type='MixConv'),
                 pw_conv_cfg: dict = dict(type='MixGroupedPointwise'),
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg)
        _check_positive_int('in_channels', in_channels)
        _check_positive_int('out_channels', out_channels)
        _check_positive_int('expand_splits', expand_splits)
        _check_positive_int('project_splits', project_splits)
        if stride not in (1, 2):
            raise ValueError(f'stride must be 1 or 2, got {stride!r}')
        if not isinstance(expand_ratio, Real) or isinstance(expand_ratio, bool) \
                or expand_ratio < 1:
            raise ValueError(f'expand_ratio must be a number >= 1, got {expand_ratio!r}')
        if se_ratio is not None and (not isinstance(se_ratio, Real) or se_ratio < 0):
            raise ValueError(f'se_ratio must be None or a number >= 0, got {se_ratio!r}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        self.kernel_sizes = _as_kernel_sizes(kernel_sizes)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.with_cp = with_cp
        self.with_res_shortcut = stride == 1 and in_channels == out_channels
        self.with_expand_conv = expand_ratio != 1
        self.with_se = bool(se_ratio)
        self.mid_channels = int(in_channels * expand_ratio)
        mid = self.mid_channels

        def pointwise_cfg(splits: int) -> Optional[dict]:
            if splits == 1:
                return conv_cfg
            return dict(copy.deepcopy(pw_conv_cfg), num_splits=splits)

        if self.with_expand_conv:
            self.expand_conv = FusedConvModule(
                in_channels,
                mid,
                1,
                conv_cfg=pointwise_cfg(expand_splits),
                norm_cfg=norm_cfg,
                act_cfg=act_cfg)
        k = max(self.kernel_sizes)
        if len(self.kernel_sizes) > 1:
            dw_cfg = dict(copy.deepcopy(mixconv_cfg), kernel_sizes=self.kernel_sizes)
        else:
            dw_cfg = conv_cfg
        self.depthwise_conv = FusedConvModule(
            mid,
            mid,
            k,
            stride=stride,
            padding=k // 2,
            groups=mid,
            conv_cfg=dw_cfg,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg)
        if self.with_se:
            self.se = SELayer(
                channels=mid,
                squeeze_channels=max(1, int(in_channels * se_ratio)),
                conv_cfg=conv_cfg,
                act_cfg=(copy.deepcopy(act_cfg), dict(type='Sigmoid')))
        self.linear_conv = FusedConvModule(
            mid,
            out_channels,
            1,
            conv_cfg=pointwise_cfg(project_splits),
            norm_cfg=norm_cfg,
            act_cfg=None)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.with_expand_conv:
            out = self.expand_conv(out)
        out = self.depthwise_conv(out)
        if self.with_se:
            out = self.se(out)
        out = self.linear_conv(out)
        if self.with_res_shortcut:
            return x + self.drop_path(out)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forward function.

        Args:
            x (torch.Tensor): Input of shape ``(N, in_channels, H, W)``.

        Returns:
            torch.Tensor: Output of shape ``(N, out_channels, H', W')`` with
            ``H' = ceil(H / stride)``.
        """
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)
