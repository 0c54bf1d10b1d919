# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""MixNet-S/M/L (Tan & Le, "MixConv: Mixed Depthwise Convolutional Kernels",
BMVC 2019) as an OpenMMLab backbone.

The structure is exactly TF MixNet / timm's ``mixnet_s``/``mixnet_m``/
``mixnet_l`` (a timm state dict converted by
``tools/model_converters/timm_mixnet_to_mmeff.py`` loads and gives the same
outputs), built from mmcv ``ConvModule``s so that the conv,
norm and activation layers are configurable (``FusedConvModule``: a stock
BatchNorm + ReLU/SiLU train as one fused CPU op). OpenMMLab has no MixNet.
"""
import copy
from numbers import Real
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import Sequential
from mmengine.registry import MODELS
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.models.utils import make_divisible
from torch.nn.modules.batchnorm import _BatchNorm

from mm_efficientconv.backbones.blocks import MixInvertedResidual
from mm_efficientconv.layers.batch_norm_act import FusedConvModule

_ROW_FIELDS = ('repeats', 'kernel_sizes', 'expand_ratio', 'out_channels', 'stride', 'se_ratio',
               'act', 'expand_splits', 'project_splits')
_ARCH_KEYS = ('stem_channels', 'head_channels', 'widen_factor', 'stages')
_ACTS = ('relu', 'swish')

# Stage rows: repeats, depthwise kernel sizes, expand ratio, out channels,
# stride of the first repeat, SE ratio (of the block input channels; 0 = no SE),
# activation, expand 1x1 splits, project 1x1 splits.
# yapf: disable
_MIXNET_S_STAGES = [
    [[1, (3, ), 1, 16, 1, 0, 'relu', 1, 1]],
    [[1, (3, ), 6, 24, 2, 0, 'relu', 2, 2],
     [1, (3, ), 3, 24, 1, 0, 'relu', 2, 2]],
    [[1, (3, 5, 7), 6, 40, 2, 0.5, 'swish', 1, 1],
     [3, (3, 5), 6, 40, 1, 0.5, 'swish', 2, 2]],
    [[1, (3, 5, 7), 6, 80, 2, 0.25, 'swish', 1, 2],
     [2, (3, 5), 6, 80, 1, 0.25, 'swish', 1, 2]],
    [[1, (3, 5, 7), 6, 120, 1, 0.5, 'swish', 2, 2],
     [2, (3, 5, 7, 9), 3, 120, 1, 0.5, 'swish', 2, 2]],
    [[1, (3, 5, 7, 9, 11), 6, 200, 2, 0.5, 'swish', 1, 1],
     [2, (3, 5, 7, 9), 6, 200, 1, 0.5, 'swish', 1, 2]],
]
_MIXNET_M_STAGES = [
    [[1, (3, ), 1, 24, 1, 0, 'relu', 1, 1]],
    [[1, (3, 5, 7), 6, 32, 2, 0, 'relu', 2, 2],
     [1, (3, ), 3, 32, 1, 0, 'relu', 2, 2]],
    [[1, (3, 5, 7, 9), 6, 40, 2, 0.5, 'swish', 1, 1],
     [3, (3, 5), 6, 40, 1, 0.5, 'swish', 2, 2]],
    [[1, (3, 5, 7), 6, 80, 2, 0.25, 'swish', 1, 1],
     [3, (3, 5, 7, 9), 6, 80, 1, 0.25, 'swish', 2, 2]],
    [[1, (3, ), 6, 120, 1, 0.5, 'swish', 1, 1],
     [3, (3, 5, 7, 9), 3, 120, 1, 0.5, 'swish', 2, 2]],
    [[1, (3, 5, 7, 9), 6, 200, 2, 0.5, 'swish', 1, 1],
     [3, (3, 5, 7, 9), 6, 200, 1, 0.5, 'swish', 1, 2]],
]
# yapf: enable


@MODELS.register_module()
class MixNet(BaseBackbone):
    """MixNet backbone.

    Layout (the indices used by ``out_indices`` and ``frozen_stages``):
    ``layers[0]`` is the stem (3x3/2 conv - norm - ReLU), ``layers[1]`` to
    ``layers[6]`` the six stages of :class:`MixInvertedResidual` blocks and
    ``layers[7]`` the head (1x1 conv to 1536 channels - norm - ReLU).

    ============  ======  ============  ============  ============
    index         stride  MixNet-S      MixNet-M      MixNet-L
    ============  ======  ============  ============  ============
    0 (stem)      2       16            24            32
    1             2       16            24            32
    2             4       24            32            40
    3             8       40            40            56
    4             16      80            80            104
    5             16      120           120           160
    6             32      200           200           264
    7 (head)      32      1536          1536          1536
    ============  ======  ============  ============  ============

    Detection / segmentation use ``out_indices=(2, 3, 5, 6)`` (strides 4, 8,
    16, 32); classification uses the head, ``out_indices=(7, )``.
    ``stage_channels`` lists the output channels of every index.

    Arch tables (``arch_settings``) hold ``stem_channels``, ``head_channels``
    (never scaled), ``widen_factor`` (MixNet-L is MixNet-M with 1.3) and
    ``stages``: a list of stages, each a list of rows
    ``[repeats, kernel_sizes, expand_ratio, out_channels, stride, se_ratio,
    act, expand_splits, project_splits]`` (REFERENCE section 1.2). Stem and
    stage widths are ``make_divisible(c * widen_factor, 8)`` (TF
    ``round_filters``); the first repeat of a row carries its stride. ``act``
    is ``'relu'`` (``act_cfg``), ``'swish'`` (``swish_cfg``) or an activation
    config dict.

    Args:
        arch (str | dict): ``'s'``, ``'m'``, ``'l'`` or a custom arch dict
            with the keys above (``widen_factor`` optional, default 1.0).
            Defaults to ``'s'``.
        out_indices (Sequence[int]): Indices of ``layers`` whose outputs are
            returned (negative indices count from the end). Defaults to
            ``(7, )``, the head.
        frozen_stages (int): ``layers[0:frozen_stages]`` are frozen (eval
            mode, no gradient). Defaults to 0.
        conv_cfg (dict, optional): Config of the plain convs (stem, head,
            ungrouped 1x1, single-kernel depthwise, SE). Defaults to None
            (``nn.Conv2d``).
        mixconv_cfg (dict): Config of the multi-kernel depthwise convs (the
            block sets ``kernel_sizes``); e.g. add ``fuse='never'`` or
            ``split='exp'``. Defaults to ``dict(type='MixConv')``.
        pw_conv_cfg (dict): Config of the split 1x1 convs (the block sets
            ``num_splits``). Defaults to ``dict(type='MixGroupedPointwise')``.
        norm_cfg (dict): Norm config; ``eps=1e-3`` is the TF reference
            (timm's own weights were trained with 1e-5). Defaults to
            ``dict(type='BN', eps=1e-3)``.
        act_cfg (dict): Activation of the stem, the head and the ``'relu'``
            rows. Defaults to ``dict(type='ReLU')``.
        swish_cfg (dict): Activation of the ``'swish'`` rows. Defaults to
            ``dict(type='SiLU')``.
        norm_eval (bool): Keep norm layers in eval mode during training
            (frozen running statistics). Defaults to False.
        with_cp (bool): Activation checkpointing in the blocks. Defaults to
            False.
        drop_path_rate (float): Stochastic depth rate, increasing linearly
            from 0 (first block) to this value (last block). Defaults to 0.
        init_cfg (dict | list[dict], optional): Initialisation config.
            Defaults to Kaiming init of conv layers and constant 1 for norm
            layers; the groups of mixed convs are then initialised each as a
            conv of its own (see :meth:`init_weights`).
    """

    arch_settings = {
        's': dict(stem_channels=16, head_channels=1536, widen_factor=1.0,
                  stages=_MIXNET_S_STAGES),
        'm': dict(stem_channels=24, head_channels=1536, widen_factor=1.0,
                  stages=_MIXNET_M_STAGES),
        'l': dict(stem_channels=24, head_channels=1536, widen_factor=1.3,
                  stages=_MIXNET_M_STAGES),
    }

    def __init__(self,
                 arch: Union[str, dict] = 's',
                 out_indices: Sequence[int] = (7, ),
                 frozen_stages: int = 0,
                 conv_cfg: Optional[dict] = None,
                 mixconv_cfg: dict = dict(type='MixConv'),
                 pw_conv_cfg: dict = dict(type='MixGroupedPointwise'),
                 norm_cfg: dict = dict(type='BN', eps=1e-3),
                 act_cfg: dict = dict(type='ReLU'),
                 swish_cfg: dict = dict(type='SiLU'),
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 drop_path_rate: float = 0.,
                 init_cfg=[
                     dict(type='Kaiming', layer='Conv2d'),
                     dict(type='Constant', layer=['_BatchNorm', 'GroupNorm'], val=1)
                 ]) -> None:
        super().__init__(init_cfg)
        self.arch = self._parse_arch(arch)
        if not isinstance(drop_path_rate, Real) or not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        num_layers = len(self.arch['stages']) + 2
        self.out_indices = self._parse_out_indices(out_indices, num_layers)
        if not isinstance(frozen_stages, int) or isinstance(frozen_stages, bool) \
                or not 0 <= frozen_stages <= num_layers:
            raise ValueError(f'frozen_stages must be an int in [0, {num_layers}], '
                             f'got {frozen_stages!r}')
        self.frozen_stages = frozen_stages
        self.conv_cfg = conv_cfg
        self.mixconv_cfg = mixconv_cfg
        self.pw_conv_cfg = pw_conv_cfg
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.swish_cfg = swish_cfg
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.drop_path_rate = drop_path_rate

        widen = self.arch['widen_factor']
        in_channels = make_divisible(self.arch['stem_channels'] * widen, 8)
        self.stage_channels: List[int] = [in_channels]
        self.layers = nn.ModuleList()
        self.layers.append(
            FusedConvModule(
                3,
                in_channels,
                3,
                stride=2,
                padding=1,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg))

        num_blocks = sum(row[0] for stage in self.arch['stages'] for row in stage)
        dpr = torch.linspace(0, drop_path_rate, num_blocks).tolist()
        block_idx = 0
        for stage in self.arch['stages']:
            blocks = []
            for (repeats, kernel_sizes, expand_ratio, out_channels, stride, se_ratio, act,
                 expand_splits, project_splits) in stage:
                out_channels = make_divisible(out_channels * widen, 8)
                for i in range(repeats):
                    blocks.append(
                        MixInvertedResidual(
                            in_channels,
                            out_channels,
                            kernel_sizes=kernel_sizes,
                            stride=stride if i == 0 else 1,
                            expand_ratio=expand_ratio,
                            se_ratio=se_ratio,
                            expand_splits=expand_splits,
                            project_splits=project_splits,
                            conv_cfg=conv_cfg,
                            mixconv_cfg=mixconv_cfg,
                            pw_conv_cfg=pw_conv_cfg,
                            norm_cfg=norm_cfg,
                            act_cfg=self._act(act),
                            drop_path_rate=dpr[block_idx],
                            with_cp=with_cp))
                    in_channels = out_channels
                    block_idx += 1
            self.layers.append(Sequential(*blocks))
            self.stage_channels.append(in_channels)

        head_channels = self.arch['head_channels']
        self.layers.append(
            FusedConvModule(
                in_channels,
                head_channels,
                1,
                conv_cfg=conv_cfg,
                norm_cfg=norm_cfg,
                act_cfg=act_cfg))
        self.stage_channels.append(head_channels)
        self.out_channels = [self.stage_channels[i] for i in self.out_indices]
        self._freeze_stages()

    # ------------------------------------------------------------ arguments
    @classmethod
    def _parse_arch(cls, arch) -> dict:
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ValueError(f'arch must be one of {sorted(cls.arch_settings)} or an arch '
                                 f'dict, got {arch!r}')
            return copy.deepcopy(cls.arch_settings[arch.lower()])
        if not isinstance(arch, dict):
            raise ValueError(f'arch must be one of {sorted(cls.arch_settings)} or an arch dict, '
                             f'got {type(arch).__name__}')
        arch = dict(copy.deepcopy(arch))
        arch.setdefault('widen_factor', 1.0)
        missing = [k for k in _ARCH_KEYS if k not in arch]
        unknown = [k for k in arch if k not in _ARCH_KEYS]
        if missing or unknown:
            raise ValueError(f'an arch dict needs the keys {_ARCH_KEYS} (widen_factor optional); '
                             f'missing {missing}, unknown {unknown}')
        for key in ('stem_channels', 'head_channels'):
            value = arch[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'arch[{key!r}] must be a positive int, got {value!r}')
        widen = arch['widen_factor']
        if not isinstance(widen, Real) or isinstance(widen, bool) or widen <= 0:
            raise ValueError(f'arch["widen_factor"] must be a positive number, got {widen!r}')
        stages = arch['stages']
        if not isinstance(stages, (list, tuple)) or not stages:
            raise ValueError('arch["stages"] must be a non-empty list of stages')
        for s, stage in enumerate(stages):
            if not isinstance(stage, (list, tuple)) or not stage:
                raise ValueError(f'arch["stages"][{s}] must be a non-empty list of rows')
            for r, row in enumerate(stage):
                cls._check_row(row, f'arch["stages"][{s}][{r}]')
        return arch

    @staticmethod
    def _check_row(row, where: str) -> None:
        if not isinstance(row, (list, tuple)) or len(row) != len(_ROW_FIELDS):
            raise ValueError(f'{where} must be a list of {len(_ROW_FIELDS)} fields '
                             f'{_ROW_FIELDS}, got {row!r}')
        fields = dict(zip(_ROW_FIELDS, row))
        for key in ('repeats', 'out_channels', 'expand_splits', 'project_splits'):
            v = fields[key]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f'{where}: {key} must be a positive int, got {v!r}')
        if fields['stride'] not in (1, 2):
            raise ValueError(f'{where}: stride must be 1 or 2, got {fields["stride"]!r}')
        act = fields['act']
        if not isinstance(act, dict) and act not in _ACTS:
            raise ValueError(f'{where}: act must be one of {_ACTS} or a config dict, '
                             f'got {act!r}')

    @staticmethod
    def _parse_out_indices(out_indices, num_layers: int) -> List[int]:
        if isinstance(out_indices, int) and not isinstance(out_indices, bool):
            out_indices = [out_indices]
        if not isinstance(out_indices, (list, tuple)) or not out_indices:
            raise ValueError(f'out_indices must be a non-empty sequence of ints, '
                             f'got {out_indices!r}')
        result = []
        for index in out_indices:
            if not isinstance(index, int) or isinstance(index, bool) \
                    or not -num_layers <= index < num_layers:
                raise ValueError(f'out_indices must hold ints in [{-num_layers}, '
                                 f'{num_layers - 1}] (0: stem, {num_layers - 1}: head), '
                                 f'got {index!r}')
            result.append(index % num_layers)
        return result

    def _act(self, act) -> dict:
        if isinstance(act, dict):
            return copy.deepcopy(act)
        return copy.deepcopy(self.act_cfg if act == 'relu' else self.swish_cfg)

    # -------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> tuple:
        """Forward function.

        Args:
            x (torch.Tensor): Images of shape ``(N, 3, H, W)``.

        Returns:
            tuple[torch.Tensor]: The outputs of ``layers[i]`` for ``i`` in
            ``out_indices``, in that order.
        """
        outs = {}
        last = max(self.out_indices)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                outs[i] = x
            if i == last:
                break
        return tuple(outs[i] for i in self.out_indices)

    # ------------------------------------------------------- train / init
    def _freeze_stages(self) -> None:
        for i in range(self.frozen_stages):
            layer = self.layers[i]
            layer.eval()
            for param in layer.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        """Sets the training mode, keeping frozen stages (and, with
        ``norm_eval``, every norm layer) in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_weights(self) -> None:
        """Applies ``init_cfg``, then the TF MixNet init of the mixed convs:
        every group of a ``MixConv`` / ``MixGroupedPointwise`` gets
        Kaiming-normal (fan-out) init as a conv of its own
        (``kaiming_init_parts()``; ``init_cfg`` initialises the layer's
        dense ``weight`` as a whole). With a ``Pretrained`` ``init_cfg`` the
        loaded weights are kept."""
        if self._is_init:
            super().init_weights()  # mmengine warns about the repeated call
            return
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs)
        super().init_weights()
        if pretrained:
            return
        for m in self.modules():
            if isinstance(m, ConvModule):
                init = getattr(m.conv, 'kaiming_init_parts', None)
                if callable(init):
                    init()


# ----------------------------------------------------------------- timm keys
def convert_timm_mixnet(state_dict, backbone_prefix: str = 'backbone.',
                        head_prefix: str = 'head.fc.'):
    """Deprecated here: the timm key mapping lives in
    ``tools/model_converters/timm_mixnet_to_mmeff.py`` (its
    ``convert_timm_mixnet``, same arguments); this shim loads it from the
    repository's or the installed package's ``tools`` folder."""
    import importlib.util
    import os.path as osp
    import warnings
    warnings.warn('mm_efficientconv.backbones.mixnet.convert_timm_mixnet moved to '
                  'tools/model_converters/timm_mixnet_to_mmeff.py', DeprecationWarning,
                  stacklevel=2)
    package = osp.dirname(osp.dirname(osp.abspath(__file__)))
    relative = osp.join('tools', 'model_converters', 'timm_mixnet_to_mmeff.py')
    for root in (osp.dirname(package), osp.join(package, '.mim')):
        path = osp.join(root, relative)
        if osp.isfile(path):
            spec = importlib.util.spec_from_file_location('timm_mixnet_to_mmeff', path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module.convert_timm_mixnet(state_dict, backbone_prefix, head_prefix)
    raise FileNotFoundError(f'{relative} not found next to the package or in its .mim folder')
