# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Converts a timm MixNet checkpoint (``mixnet_s``/``mixnet_m``/``mixnet_l``)
into a checkpoint of an mmpretrain ``ImageClassifier`` with the
``MixNet`` backbone of mm_efficientconv.

Example::

    python tools/model_converters/timm_mixnet_to_mmeff.py \\
        mixnet_s-a907afbc.pth mixnet-s_timm-in1k.pth

The key mapping is :func:`mm_efficientconv.backbones.mixnet.convert_timm_mixnet`.
timm's own MixNet weights were trained with BN ``eps=1e-5``; evaluate them
with ``model.backbone.norm_cfg=dict(type='BN', eps=1e-5)`` (the configs of
this project default to the TF value 1e-3, used when training from scratch).
"""
import argparse
import os.path as osp

import torch

from mm_efficientconv.backbones.mixnet import convert_timm_mixnet


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
