# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Layer-level suites: DO-Conv at ResNet-50's 3x3 shapes (/ ``nn.Conv2d``, /
the reference's per-forward composition, folded), MixConv at MixNet-S shapes
(/ ``timm.layers.MixedConv2d``, fused / split), BSConv-U at MobileNetV1 shapes
(/ ``bsconv.pytorch.BSConvU``).

Every suite is ``suite(cfg, device) -> dict(cases=[...], ...)``; timm and
bsconv are imported only here, inside the suites that compare against them.
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .harness import eval_scope, fmt_ratios, interleaved, log, make_step, max_abs_diff
from .profiles import BSCONV_SHAPES, DOCONV_SHAPES, MIXCONV_SHAPES, cases_of, scaled


class ReferenceDOConv(nn.Module):
    """DO-Conv as the reference implementation evaluates it (groups = 1):
    ``D`` is stored relative to a frozen identity *Parameter* ``d_diag``
    (``(in, kh*kw, D_mul)``) and the kernel is composed with
    ``einsum('ims,ois->oim', D + d_diag, W)`` at every forward, in training
    and in evaluation alike. Written from the paper's kernel composition.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Square kernel size.
        stride (int): Stride. Defaults to 1.
        padding (int): Zero padding. Defaults to 0.
        bias (bool): Whether to add a bias. Defaults to False.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, bias: bool = False) -> None:
        super().__init__()
        self.out_channels, self.in_channels = out_channels, in_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        taps = kernel_size * kernel_size
        self.W = nn.Parameter(torch.randn(out_channels, in_channels, taps) * 0.05)
        self.D = nn.Parameter(torch.zeros(in_channels, taps, taps))
        eye = torch.eye(taps).reshape(1, taps, taps).repeat(in_channels, 1, 1)
        self.d_diag = nn.Parameter(eye, requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        D = self.D + self.d_diag
        kernel = torch.einsum('ims,ois->oim', D, self.W)
        kernel = kernel.reshape(self.out_channels, self.in_channels, self.kernel_size,
                                self.kernel_size)
        return F.conv2d(x, kernel, self.bias, self.stride, self.padding)


def bench_doconv(cfg: dict, device: torch.device) -> dict:
    """DO-Conv / conv / reference / folded per mode; eval inside
    ``cached_kernels()``, plus the unscoped eval cost."""
    from mm_efficientconv.layers import switch_to_deploy
    from mm_efficientconv.layers.doconv import DOConv
    cases = []
    for c, s in cases_of(DOCONV_SHAPES, cfg):
        c, s = scaled(c, s, cfg)
        x = torch.randn(cfg['doconv_batch'], c, s, s, device=device)
        conv = nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
        ours = DOConv(c, c, 3, padding=1, bias=False).to(device)
        with torch.no_grad():
            ours.D.normal_(0, 0.05)  # a trained-looking D' (timing does not depend on it)
        ref = ReferenceDOConv(c, c, 3, padding=1).to(device)
        with torch.no_grad():
            ref.W.copy_(ours.W)
            ref.D.copy_(ours.D)  # reference D + d_diag == our D' + I
        folded = switch_to_deploy(copy.deepcopy(ours).eval())
        name = f'conv3x3 {c}ch {s}x{s}'
        shape = [cfg['doconv_batch'], c, s, s]
        check = dict(reference=max_abs_diff(ours.eval(), ref.eval(), x),
                     folded=max_abs_diff(ours.eval(), folded, x))
        for mode in cfg['layer_modes']:
            steps = {'conv': make_step(conv, x, mode), 'doconv': make_step(ours, x, mode),
                     'reference': make_step(ref, x, mode)}
            pairs = {'doconv/conv': ('doconv', 'conv'), 'doconv/reference': ('doconv', 'reference'),
                     'reference/conv': ('reference', 'conv')}
            memory = mode in cfg['memory_modes']
            if mode == 'eval':
                steps['folded'] = make_step(folded, x, 'deploy')
                pairs['folded/conv'] = ('folded', 'conv')
            with eval_scope(mode):
                res = interleaved(steps, pairs, cfg, device, memory)
            cases.append(dict(family='doconv', case=name, shape=shape, mode=mode,
                              baseline='conv', max_abs_diff=check, **res))
            log(f'doconv {name} {mode}: ' + fmt_ratios(res['ratios']))
            if mode == 'eval':
                # outside any cache scope the kernel is composed at every call
                steps = {'conv': make_step(conv, x, 'eval'), 'unscoped': make_step(ours, x, 'eval')}
                res = interleaved(steps, {'unscoped/conv': ('unscoped', 'conv')}, cfg, device)
                cases.append(dict(family='doconv', case=f'{name} (no cache scope)', shape=shape,
                                  mode='eval', baseline='conv', **res))
                log(f'doconv {name} eval unscoped: ' + fmt_ratios(res['ratios']))
    return dict(cases=cases)


def bench_mixconv(cfg: dict, device: torch.device) -> dict:
    """MixConv / timm ``MixedConv2d`` per mode, and fused / split."""
    from timm.layers import MixedConv2d

    from mm_efficientconv.layers.mixconv import MixConv
    cases, fused_split = [], []
    for c, s, kernels, stride in cases_of(MIXCONV_SHAPES, cfg):
        c, s = scaled(c, s, cfg)
        c = max(c, 2 * len(kernels))
        x = torch.randn(cfg['layer_batch'], c, s, s, device=device)
        k = max(kernels)
        timm_conv = MixedConv2d(c, c, list(kernels), stride=stride, depthwise=True).to(device)
        ours = MixConv(c, c, k, stride=stride, padding=k // 2, groups=c, bias=False,
                       kernel_sizes=kernels).to(device)
        with torch.no_grad():
            for kernel, conv in zip(ours.kernels, timm_conv.values()):
                kernel.copy_(conv.weight)
        fused = copy.deepcopy(ours)
        fused.fuse_mode = 'always'
        split = copy.deepcopy(ours)
        split.fuse_mode = 'never'
        name = f'mixconv{kernels} {c}ch {s}x{s} s{stride}'
        shape = [cfg['layer_batch'], c, s, s]
        check = dict(timm=max_abs_diff(ours.eval(), timm_conv.eval(), x),
                     fused=max_abs_diff(fused.eval(), split.eval(), x))
        for mode in cfg['layer_modes']:
            steps = {'timm': make_step(timm_conv, x, mode), 'mixconv': make_step(ours, x, mode)}
            with eval_scope(mode):
                res = interleaved(steps, {'mixconv/timm': ('mixconv', 'timm')}, cfg, device,
                                  mode in cfg['memory_modes'])
            cases.append(dict(family='mixconv', case=name, shape=shape, mode=mode,
                              baseline='timm', max_abs_diff=check, **res))
            log(f'mixconv {name} {mode}: ' + fmt_ratios(res['ratios']))
        for mode in ('train', 'eval') if cfg['fused_vs_split'] else ():
            steps = {'split': make_step(split, x, mode), 'fused': make_step(fused, x, mode)}
            with eval_scope(mode):
                res = interleaved(steps, {'fused/split': ('fused', 'split')}, cfg, device, False)
            fused_split.append(dict(family='mixconv_fused_vs_split', case=name, shape=shape,
                                    mode=mode, baseline='split', **res))
            log(f'mixconv {name} fused-vs-split {mode}: ' + fmt_ratios(res['ratios']))
    return dict(cases=cases, fused_vs_split=fused_split)


def bench_bsconv(cfg: dict, device: torch.device) -> dict:
    """BSConvU / ``bsconv.pytorch.BSConvU`` per mode."""
    from bsconv.pytorch import BSConvU as RefBSConvU

    from mm_efficientconv.layers.bsconv import BSConvU
    cases = []
    for cin, cout, s, stride in cases_of(BSCONV_SHAPES, cfg):
        cin, s = scaled(cin, s, cfg)
        cout, _ = scaled(cout, s, cfg)
        x = torch.randn(cfg['layer_batch'], cin, s, s, device=device)
        ref = RefBSConvU(cin, cout, 3, stride=stride, padding=1, bias=False).to(device)
        ours = BSConvU(cin, cout, 3, stride=stride, padding=1, bias=False).to(device)
        with torch.no_grad():
            ours.pw.weight.copy_(ref.pw.weight)
            ours.dw.weight.copy_(ref.dw.weight)
        name = f'bsconvu {cin}->{cout} {s}x{s} s{stride}'
        shape = [cfg['layer_batch'], cin, s, s]
        check = dict(reference=max_abs_diff(ours.eval(), ref.eval(), x))
        for mode in cfg['layer_modes']:
            steps = {'reference': make_step(ref, x, mode), 'bsconvu': make_step(ours, x, mode)}
            res = interleaved(steps, {'bsconvu/reference': ('bsconvu', 'reference')}, cfg,
                              device, mode in cfg['memory_modes'])
            cases.append(dict(family='bsconvu', case=name, shape=shape, mode=mode,
                              baseline='reference', max_abs_diff=check, **res))
            log(f'bsconvu {name} {mode}: ' + fmt_ratios(res['ratios']))
    return dict(cases=cases)
