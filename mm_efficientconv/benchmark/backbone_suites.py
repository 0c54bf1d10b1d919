# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Backbone suites (inference; forward+backward in the full profile):
mmpretrain ResNet-50 stock / DO-Conv unfolded / folded; our MixNet-S deploy
form / timm ``mixnet_s``; MobileNetV1 DSC / BSConv-U; each also
channels-last / NCHW."""
import copy
from typing import Dict, Tuple

import torch
import torch.nn as nn

from .harness import (add_best_format_ratio, eval_scope, fmt_ratios, interleaved, log, make_step,
                      max_abs_diff)


def eval_mode(model: nn.Module) -> nn.Module:
    """``model.eval()`` returning the model (mmpretrain's backbones return
    None from ``train()``)."""
    model.eval()
    return model


def deploy_fused(model: nn.Module) -> nn.Module:
    """Our deploy form of a copy of ``model``: ``switch_to_deploy`` then
    conv+BN fusion (``mmcv.cnn.fuse_conv_bn``)."""
    from mmcv.cnn import fuse_conv_bn

    from mm_efficientconv.layers import switch_to_deploy
    model = switch_to_deploy(eval_mode(copy.deepcopy(model)))
    return eval_mode(fuse_conv_bn(model))


def format_variants(models: Dict[str, nn.Module], x: torch.Tensor) -> Tuple[dict, dict]:
    """Each model as ``NAME@nchw`` and, a deep copy, ``NAME@cl``
    (channels-last), with the matching inputs."""
    variants, inputs = {}, {}
    x_cl = x.contiguous(memory_format=torch.channels_last)
    for name, model in models.items():
        variants[f'{name}@nchw'], inputs[f'{name}@nchw'] = model, x
        variants[f'{name}@cl'] = copy.deepcopy(model).to(memory_format=torch.channels_last)
        inputs[f'{name}@cl'] = x_cl
    return variants, inputs


class TimmFeatures(nn.Module):
    """timm model's ``forward_features`` as ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(inp)


def bench_resnet(cfg: dict, device: torch.device) -> dict:
    """ResNet-50 stock / DO-Conv unfolded (in ``cached_kernels()``) / folded."""
    from mmpretrain.models import ResNet

    import mm_efficientconv.layers.doconv  # noqa: F401  (registers DOConv)
    from mm_efficientconv.layers import switch_to_deploy
    rounds = max(cfg['min_repeats'], cfg.get('resnet_min_repeats', 0))
    cfg = dict(cfg, min_repeats=rounds, max_repeats=max(cfg['max_repeats'], rounds))
    res_ = cfg['resolution']
    x = torch.randn(cfg['backbone_batch'], 3, res_, res_, device=device)
    stock = eval_mode(ResNet(depth=50).to(device))
    unfolded = ResNet(depth=50, conv_cfg=dict(type='DOConv')).to(device)
    unfolded.load_state_dict(stock.state_dict())  # plain weights -> W, D' = 0: same function
    unfolded.eval()
    folded = eval_mode(switch_to_deploy(copy.deepcopy(unfolded)))
    check = dict(unfolded=max_abs_diff(unfolded, stock, x), folded=max_abs_diff(folded, stock, x))
    shape = list(x.shape)
    cases, formats = [], []
    variants, inputs = format_variants(dict(stock=stock, folded=folded), x)
    # stock and folded next to each other: adjacent in 4 of the 5 rotations (less drift
    # between the two samples of a round)
    steps = {'stock@nchw': make_step(variants['stock@nchw'], x, 'eval'),
             'folded@nchw': make_step(variants['folded@nchw'], x, 'deploy'),
             'unfolded@nchw': make_step(unfolded, x, 'eval'),
             'stock@cl': make_step(variants['stock@cl'], inputs['stock@cl'], 'eval'),
             'folded@cl': make_step(variants['folded@cl'], inputs['folded@cl'], 'deploy')}
    pairs = {'folded/stock': ('folded@nchw', 'stock@nchw'),
             'unfolded/stock': ('unfolded@nchw', 'stock@nchw'),
             'folded/stock@cl': ('folded@cl', 'stock@cl'),
             'stock cl/nchw': ('stock@cl', 'stock@nchw'),
             'folded cl/nchw': ('folded@cl', 'folded@nchw')}
    with eval_scope('eval'):
        res = interleaved(steps, pairs, cfg, device, 'eval' in cfg['memory_modes'])
    cases.append(dict(family='resnet50', case='ResNet-50 stock / DO-Conv', shape=shape,
                      mode='eval', baseline='stock@nchw', max_abs_diff=check, **res))
    log('resnet50 eval: ' + fmt_ratios(res['ratios']))
    for model in ('stock', 'folded'):
        formats.append(dict(model=f'ResNet-50 {model}', mode='eval',
                            cl_over_nchw=res['ratios'][f'{model} cl/nchw'],
                            nchw_ms=res['results'][f'{model}@nchw']['median_ms'],
                            cl_ms=res['results'][f'{model}@cl']['median_ms']))
    if cfg['backbone_train']:
        steps = {'stock': make_step(stock, x, 'train'), 'unfolded': make_step(unfolded, x, 'train')}
        res = interleaved(steps, {'unfolded/stock': ('unfolded', 'stock')}, cfg, device,
                          'train' in cfg['memory_modes'])
        cases.append(dict(family='resnet50', case='ResNet-50 stock / DO-Conv', shape=shape,
                          mode='train', baseline='stock', **res))
        log('resnet50 train: ' + fmt_ratios(res['ratios']))
    return dict(cases=cases, channels_last=formats)


def timm_mixnet_s_pair(device: torch.device) -> Tuple[nn.Module, nn.Module]:
    """timm ``mixnet_s`` (random weights, non-trivial BN statistics) and our
    MixNet-S backbone holding the same weights (BN eps 1e-5 as timm's), both
    in eval mode."""
    import timm

    from mm_efficientconv.backbones.mixnet import MixNet, convert_timm_mixnet
    timm_model = eval_mode(timm.create_model('mixnet_s', pretrained=False).to(device))
    with torch.no_grad():  # non-trivial BN statistics, so the check means something
        for m in timm_model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    ours = MixNet('s', norm_cfg=dict(type='BN', eps=1e-5)).to(device)
    state = convert_timm_mixnet(timm_model.state_dict(), backbone_prefix='', head_prefix='fc.')
    ours.load_state_dict({k: v for k, v in state.items() if not k.startswith('fc.')})
    return timm_model, eval_mode(ours)


def bench_mixnet(cfg: dict, device: torch.device) -> dict:
    """Our MixNet-S deploy form / timm ``mixnet_s`` eval, best format each."""
    res_ = cfg['resolution']
    x = torch.randn(cfg['mixnet_batch'], 3, res_, res_, device=device)
    timm_model, ours = timm_mixnet_s_pair(device)
    deployed = deploy_fused(ours)
    timm_feat = eval_mode(TimmFeatures(timm_model))
    check = dict(deploy=max_abs_diff(deployed, timm_feat, x),
                 unfused=max_abs_diff(ours, timm_feat, x))
    variants, inputs = format_variants(dict(ours=deployed, timm=timm_feat), x)
    steps = {n: make_step(m, inputs[n], 'deploy' if n.startswith('ours') else 'eval')
             for n, m in variants.items()}
    pairs = {'ours/timm@nchw': ('ours@nchw', 'timm@nchw'), 'ours/timm@cl': ('ours@cl', 'timm@cl'),
             'ours cl/nchw': ('ours@cl', 'ours@nchw'), 'timm cl/nchw': ('timm@cl', 'timm@nchw')}
    res = interleaved(steps, pairs, cfg, device, 'deploy' in cfg['memory_modes'])
    # the faster memory format of each model (by median), then the paired ratio
    add_best_format_ratio(res, ('ours', 'timm'), 'ours best/timm best')
    raw = res['results']
    shape = list(x.shape)
    cases = [dict(family='mixnet_s', case='MixNet-S deploy / timm mixnet_s', shape=shape,
                  mode='deploy', baseline='timm', max_abs_diff=check, **res)]
    log('mixnet_s inference: ' + fmt_ratios(res['ratios']))
    formats = [dict(model=f'MixNet-S {m}', mode='eval', cl_over_nchw=res['ratios'][f'{m} cl/nchw'],
                    nchw_ms=raw[f'{m}@nchw']['median_ms'], cl_ms=raw[f'{m}@cl']['median_ms'])
               for m in ('ours', 'timm')]
    if cfg['backbone_train']:
        steps = {'timm': make_step(TimmFeatures(copy.deepcopy(timm_model)), x, 'train'),
                 'ours': make_step(copy.deepcopy(ours), x, 'train')}
        res = interleaved(steps, {'ours/timm': ('ours', 'timm')}, cfg, device,
                          'train' in cfg['memory_modes'])
        cases.append(dict(family='mixnet_s', case='MixNet-S / timm mixnet_s', shape=shape,
                          mode='train', baseline='timm', **res))
        log('mixnet_s train: ' + fmt_ratios(res['ratios']))
    return dict(cases=cases, channels_last=formats)


def bench_mobilenet(cfg: dict, device: torch.device) -> dict:
    """MobileNetV1 BSConv-U / DSC, deploy form (BN fused), both formats."""
    from mm_efficientconv.backbones.mobilenet_v1 import MobileNetV1
    res_ = cfg['resolution']
    x = torch.randn(cfg['backbone_batch'], 3, res_, res_, device=device)
    dsc = eval_mode(MobileNetV1(block_type='dsc').to(device))
    bsc = eval_mode(MobileNetV1(block_type='bsconvu').to(device))
    variants, inputs = format_variants(dict(dsc=deploy_fused(dsc), bsconvu=deploy_fused(bsc)), x)
    steps = {n: make_step(m, inputs[n], 'deploy') for n, m in variants.items()}
    pairs = {'bsconvu/dsc@nchw': ('bsconvu@nchw', 'dsc@nchw'),
             'bsconvu/dsc@cl': ('bsconvu@cl', 'dsc@cl'),
             'dsc cl/nchw': ('dsc@cl', 'dsc@nchw'),
             'bsconvu cl/nchw': ('bsconvu@cl', 'bsconvu@nchw')}
    res = interleaved(steps, pairs, cfg, device, 'deploy' in cfg['memory_modes'])
    shape = list(x.shape)
    cases = [dict(family='mobilenet_v1', case='MobileNetV1 BSConv-U / DSC (deploy, BN fused)',
                  shape=shape, mode='deploy', baseline='dsc@nchw', **res)]
    log('mobilenet_v1 inference: ' + fmt_ratios(res['ratios']))
    raw = res['results']
    formats = [dict(model=f'MobileNetV1 {m}', mode='deploy',
                    cl_over_nchw=res['ratios'][f'{m} cl/nchw'],
                    nchw_ms=raw[f'{m}@nchw']['median_ms'], cl_ms=raw[f'{m}@cl']['median_ms'])
               for m in ('dsc', 'bsconvu')]
    if cfg['backbone_train']:
        steps = {'dsc': make_step(dsc, x, 'train'), 'bsconvu': make_step(bsc, x, 'train')}
        res = interleaved(steps, {'bsconvu/dsc': ('bsconvu', 'dsc')}, cfg, device,
                          'train' in cfg['memory_modes'])
        cases.append(dict(family='mobilenet_v1', case='MobileNetV1 BSConv-U / DSC', shape=shape,
                          mode='train', baseline='dsc', **res))
        log('mobilenet_v1 train: ' + fmt_ratios(res['ratios']))
    return dict(cases=cases, channels_last=formats)
