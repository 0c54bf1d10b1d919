# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Converts a timm MixNet checkpoint (``mixnet_s``/``mixnet_m``/``mixnet_l``)
into a checkpoint of an mmpretrain ``ImageClassifier`` with the
``MixNet`` backbone of mm_efficientconv.

Example::

    python tools/model_converters/timm_mixnet_to_mmeff.py \\
        mixnet_s-a907afbc.pth mixnet-s_timm-in1k.pth

The key mapping is :func:`convert_timm_mixnet` (importable from this file).
timm's own MixNet weights were trained with BN ``eps=1e-5``; evaluate them
with ``model.backbone.norm_cfg=dict(type='BN', eps=1e-5)`` (the configs of
this project default to the TF value 1e-3, used when training from scratch).
"""
import argparse
import os.path as osp
import re
from typing import Dict

import torch


_TIMM_IR = {'conv_pw': 'expand_conv.conv', 'bn1': 'expand_conv.bn',
            'conv_dw': 'depthwise_conv.conv', 'bn2': 'depthwise_conv.bn',
            'conv_pwl': 'linear_conv.conv', 'bn3': 'linear_conv.bn',
            'se.conv_reduce': 'se.conv1.conv', 'se.conv_expand': 'se.conv2.conv'}
_TIMM_DS = {'conv_dw': 'depthwise_conv.conv', 'bn1': 'depthwise_conv.bn',
            'conv_pw': 'linear_conv.conv', 'bn2': 'linear_conv.bn',
            'se.conv_reduce': 'se.conv1.conv', 'se.conv_expand': 'se.conv2.conv'}
_BLOCK_KEY = re.compile(r'^blocks\.(\d+)\.(\d+)\.(.+)$')
_SPLIT_CONV_KEY = re.compile(r'^(.+)\.(\d+)\.weight$')


def convert_timm_mixnet(state_dict: Dict[str, torch.Tensor],
                        backbone_prefix: str = 'backbone.',
                        head_prefix: str = 'head.fc.') -> Dict[str, torch.Tensor]:
    """Maps a timm ``mixnet_s``/``mixnet_m``/``mixnet_l`` state dict onto
    :class:`MixNet` (``arch='s'``/``'m'``/``'l'``) inside an mmpretrain
    ``ImageClassifier`` (``GlobalAveragePooling`` + ``LinearClsHead``). Other
    timm MixNets (``mixnet_xl``) map onto a custom arch dict with the same
    blocks.

    Key mapping (``i``, ``j``: timm stage and block):

    * ``conv_stem`` / ``bn1`` -> ``layers.0.conv`` / ``layers.0.bn``;
    * ``blocks.i.j.*`` -> ``layers.{i+1}.j.*`` with, in inverted residual
      blocks, ``conv_pw``/``bn1`` -> ``expand_conv``, ``conv_dw``/``bn2`` ->
      ``depthwise_conv``, ``conv_pwl``/``bn3`` -> ``linear_conv`` and, in the
      first (depthwise-separable) block, ``conv_dw``/``bn1`` ->
      ``depthwise_conv``, ``conv_pw``/``bn2`` -> ``linear_conv``;
      ``se.conv_reduce``/``se.conv_expand`` -> ``se.conv1.conv``/``se.conv2.conv``;
    * timm's mixed / grouped convs (``conv_dw.0.weight``, ``conv_dw.1.weight``,
      ...) -> ``MixConv`` / ``MixGroupedPointwise`` ``kernels.0``,
      ``kernels.1``, ...; single convs keep ``weight``;
    * ``conv_head`` / ``bn2`` -> ``layers.{n+1}.conv`` / ``layers.{n+1}.bn``
      (``n`` = number of timm stages);
    * ``classifier.*`` -> ``{head_prefix}*``.

    Only timm's PyTorch-native MixNets match exactly; the ``tf_mixnet_*``
    ports use TF 'same' padding, which :class:`MixNet` does not emulate. timm
    trains its own MixNets with BN ``eps=1e-5``: build the backbone with
    ``norm_cfg=dict(type='BN', eps=1e-5)`` to reproduce them.

    Args:
        state_dict (dict[str, Tensor]): The timm state dict (a ``module.``
            prefix from DDP is removed).
        backbone_prefix (str): Prefix of the backbone keys. Defaults to
            ``'backbone.'``; use ``''`` for a bare backbone.
        head_prefix (str): Prefix of the classifier keys. Defaults to
            ``'head.fc.'``.

    Returns:
        dict[str, Tensor]: The converted state dict (same tensors).

    Raises:
        KeyError: If a key is not part of a timm MixNet.
    """
    state_dict = {k[len('module.'):] if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    stages = {int(m.group(1)) for m in map(_BLOCK_KEY.match, state_dict) if m}
    if not stages:
        raise KeyError('no timm "blocks.*" keys found: not a timm MixNet state dict')
    head_index = max(stages) + 2
    ir_blocks = {m.group(1, 2) for m in map(_BLOCK_KEY.match, state_dict)
                 if m and m.group(3).startswith('conv_pwl.')}

    def conv_param(mod: str, rest: str) -> str:
        split = _SPLIT_CONV_KEY.match(rest)
        if split and split.group(1) in ('conv_dw', 'conv_pw', 'conv_pwl'):
            return f'{mod}.kernels.{split.group(2)}'
        return f'{mod}.{rest.rsplit(".", 1)[1]}'

    converted, unknown = {}, []
    for key, value in state_dict.items():
        new = None
        block = _BLOCK_KEY.match(key)
        if block:
            i, j, rest = block.groups()
            table = _TIMM_IR if (i, j) in ir_blocks else _TIMM_DS
            for src in sorted(table, key=len, reverse=True):
                if rest.startswith(src + '.'):
                    new = f'layers.{int(i) + 1}.{j}.' + conv_param(table[src], rest)
                    break
        elif key.startswith('conv_stem.'):
            new = 'layers.0.conv.' + key[len('conv_stem.'):]
        elif key.startswith('bn1.'):
            new = 'layers.0.bn.' + key[len('bn1.'):]
        elif key.startswith('conv_head.'):
            new = f'layers.{head_index}.conv.' + key[len('conv_head.'):]
        elif key.startswith('bn2.'):
            new = f'layers.{head_index}.bn.' + key[len('bn2.'):]
        elif key.startswith('classifier.'):
            converted[head_prefix + key[len('classifier.'):]] = value
            continue
        if new is None:
            unknown.append(key)
        else:
            converted[backbone_prefix + new] = value
    if unknown:
        raise KeyError(f'keys that are not part of a timm MixNet: {unknown[:10]}'
                       + (' ...' if len(unknown) > 10 else ''))
    return converted


def load_timm_state_dict(path: str) -> dict:
    """Reads a timm checkpoint: a ``.safetensors`` file, a bare state dict or
    a dict with a ``state_dict`` / ``model`` / ``state_dict_ema`` entry."""
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path)
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    for key in ('state_dict', 'model', 'state_dict_ema'):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def parse_args():
    parser = argparse.ArgumentParser(
        description='Convert a timm MixNet checkpoint to mm_efficientconv keys.')
    parser.add_argument('src', help='timm checkpoint (.pth / .bin / .safetensors)')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--backbone-only', action='store_true',
                        help='keep only the backbone, without the "backbone." prefix '
                        '(for init_cfg=dict(type="Pretrained") of a detector backbone)')
    return parser.parse_args()


def main():
    args = parse_args()
    state_dict = load_timm_state_dict(args.src)
    if args.backbone_only:
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('classifier.')}
        converted = convert_timm_mixnet(state_dict, backbone_prefix='')
    else:
        converted = convert_timm_mixnet(state_dict)
    torch.save(dict(state_dict=converted, meta=dict(source=osp.basename(args.src),
                                                    converter='timm_mixnet_to_mmeff')),
               args.dst)
    print(f'wrote {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
