# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The BSConv paper's kernel analysis (§3.1, Figure 3).

For every regular (``groups == 1``) KxK conv with K > 1, each filter is an
``M x K*K`` matrix: its M KxK slices along depth. A principal component
analysis of those M slices tells how well ONE slice (a "blueprint") scaled
along depth explains the filter: the share of variance explained by the first
principal component. Values near 1 mean the filter is almost a blueprint
times per-channel weights, the correlation BSConv builds in.

The tool builds CONFIG's model (optionally loading CHECKPOINT; without one it
analyses the initial weights, a useful baseline), computes that share per
filter, groups the convs into stages by their module path and writes one
histogram per stage (PNG) and the numbers (JSON beside it). Convs of this
package report their effective dense kernel (``layer.weight``), so trained
BSConv/DO-Conv models can be compared with plain ones.

Example:
    python tools/analysis/kernel_pca.py configs/bsconv/resnet20_1xb128_cifar10.py \
        work_dirs/resnet20/epoch_200.pth --out work_dirs/resnet20_pca.png
"""
import argparse
import json
import os
import os.path as osp
import sys
import tempfile
from collections import OrderedDict
from typing import Dict, List

import torch
import torch.nn as nn


def first_pc_variance_share(weight: torch.Tensor) -> torch.Tensor:
    """Share of variance explained by the first principal component of each
    filter's KxK slices along depth.

    Args:
        weight (Tensor): Conv kernel ``(out, in, kh, kw)`` with ``in >= 2`` and
            ``kh * kw >= 2``.

    Returns:
        Tensor: ``(out,)`` values in ``[0, 1]``.
    """
    if weight.dim() != 4:
        raise ValueError(f'weight must be 4-D (out, in, kh, kw), got shape {tuple(weight.shape)}')
    out, depth, kh, kw = weight.shape
    if depth < 2 or kh * kw < 2:
        raise ValueError('the analysis needs at least 2 input channels and a kernel larger than 1x1, '
                         f'got shape {tuple(weight.shape)}')
    slices = weight.detach().double().reshape(out, depth, kh * kw)
    centred = slices - slices.mean(dim=1, keepdim=True)
    sv = torch.linalg.svdvals(centred)  # (out, min(depth, K*K))
    energy = sv.pow(2)
    total = energy.sum(dim=1)
    share = torch.where(total > 0, energy[:, 0] / total.clamp_min(1e-300), torch.ones_like(total))
    return share.float()


def _stage_of(name: str, depth: int = 2) -> str:
    parts = [p for p in name.split('.') if p not in ('backbone', 'module')]
    return '.'.join(parts[:depth]) if len(parts) > depth else (parts[0] if parts else name)


def analyse(model: nn.Module, stage_depth: int = 1) -> Dict[str, List[float]]:
    """Per stage, the first-PC variance share of every filter of every
    analysable conv of ``model``."""
    stages: Dict[str, List[float]] = OrderedDict()
    for name, module in model.named_modules():
        if getattr(module, 'groups', None) != 1 or not hasattr(module, 'kernel_size'):
            continue
        if getattr(module, 'transposed', False):
            continue
        try:
            weight = module.weight
        except (AttributeError, NotImplementedError, RuntimeError):
            continue
        if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[1] < 2 or \
                weight.shape[2] * weight.shape[3] < 2:
            continue
        stages.setdefault(_stage_of(name, stage_depth), []).extend(
            first_pc_variance_share(weight).tolist())
    return stages


def plot(stages: Dict[str, List[float]], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    n = len(stages)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (stage, values) in zip(axes.flat, stages.items()):
        ax.hist(values, bins=20, range=(0, 1), color='tab:blue', alpha=0.85)
        ax.set_title(f'{stage} ({len(values)} filters)', fontsize=9)
        ax.set_xlabel('variance explained by PC1', fontsize=8)
        ax.axvline(sum(values) / len(values), color='tab:red', lw=1)
    for ax in list(axes.flat)[n:]:
        ax.axis('off')
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = tempfile.NamedTemporaryFile(dir=osp.dirname(osp.abspath(out)), suffix='.png', delete=False)
    tmp.close()
    fig.savefig(tmp.name, dpi=110)
    plt.close(fig)
    os.replace(tmp.name, out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='weights to analyse (default: initial weights)')
    parser.add_argument('--out', required=True, help='output PNG; the numbers go to a .json beside it')
    parser.add_argument('--stage-depth', type=int, default=1,
                        help='how many module-path components name a stage (default: 1, e.g. layer2)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import mm_efficientconv  # noqa: F401

    torch.manual_seed(args.seed)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True, logger='silent')
    else:
        model.init_weights()
    stages = analyse(model.backbone if hasattr(model, 'backbone') else model, args.stage_depth)
    if not stages:
        print('no regular conv with a kernel larger than 1x1 and >= 2 input channels in this model',
              file=sys.stderr)
        return 1
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    title = osp.basename(args.config) + (f' @ {osp.basename(args.checkpoint)}' if args.checkpoint
                                         else ' (initial weights)')
    plot(stages, args.out, title)
    summary = {stage: dict(filters=len(v), mean=sum(v) / len(v), values=v) for stage, v in stages.items()}
    json_out = osp.splitext(args.out)[0] + '.json'
    with tempfile.NamedTemporaryFile('w', dir=osp.dirname(osp.abspath(json_out)), delete=False) as f:
        json.dump(summary, f, indent=1)
    os.replace(f.name, json_out)
    for stage, s in summary.items():
        print(f"{stage:>20s}: {s['filters']:5d} filters, mean PC1 share {s['mean']:.3f}")
    print(f'wrote {args.out} and {json_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
