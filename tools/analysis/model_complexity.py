# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Parameters and FLOPs of every config, with the papers' numbers beside them.

Counts come from mmengine's analysis (``mmengine.analysis.FlopAnalyzer``:
one multiply-add counts as one FLOP, as in the papers' tables). Classifiers
are measured whole (``mode='tensor'``, i.e. backbone + neck + head) at the
crop size of the config's pipelines (test, val, then train); detectors and
segmentors are measured as backbone + neck (``extract_feat``) at 512x512,
since their heads' cost
depends on the number of proposals/post-processing; the parameter count is
the whole model's.

Example:
    python tools/analysis/model_complexity.py configs --out work_dirs/complexity.md
    python tools/analysis/model_complexity.py configs/mixnet/mixnet-s_8xb32_in1k.py
"""
import argparse
import glob
import json
import os
import os.path as osp
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'deploy'))
from fold_checkpoint import probe_shape  # noqa: E402  (the input size the deploy tools use)

# config stem -> (params, FLOPs (multiply-adds), source): the papers' numbers.
PAPER = {
    'resnet20_1xb128_cifar10': ('272.5K', '41.3M', 'BSConv Tab. 2'),
    'resnet20_1xb128_cifar100': ('278.3K', '41.3M', 'BSConv Tab. 2'),
    'resnet110-bsconvu_1xb128_cifar10': ('239.0K', '41.1M', 'BSConv Tab. 2'),
    'resnet110-bsconvu_1xb128_cifar100': ('244.8K', '41.1M', 'BSConv Tab. 2'),
    'wrn40-3_1xb128_cifar10': ('5.0M', '735.0M', 'BSConv Tab. 2'),
    'wrn40-3_1xb128_cifar100': ('5.0M', '735.0M', 'BSConv Tab. 2'),
    'wrn40-8-bsconvu_1xb128_cifar10': ('4.2M', '671.6M', 'BSConv Tab. 2'),
    'wrn40-8-bsconvu_1xb128_cifar100': ('4.3M', '671.6M', 'BSConv Tab. 2'),
    'mobilenet-v1_8xb32_in1k': ('4.23M', '-', 'MobileNetV1'),
    'mobilenet-v1-bsconvu_8xb32_in1k': ('4.23M', '-', 'BSConv §4.1 (same params)'),
    'mobilenet-v2-bsconvs_8xb32_in1k': ('3.5M', '319M', 'mmpretrain MobileNetV2 (unchanged)'),
    'mobilenet-v3-large-bsconvs_8xb128_in1k': ('5.48M', '-', 'mmpretrain MobileNetV3-L (unchanged)'),
    'mixnet-s_8xb32_in1k': ('4.1M', '256M', 'MixConv Tab. / timm 4,134,606'),
    'mixnet-m_8xb32_in1k': ('5.0M', '360M', 'MixConv Tab. / timm 5,014,382'),
    'mixnet-l_8xb32_in1k': ('7.3M', '565M', 'MixConv Tab. / timm 7,329,252'),
    'resnet50-doconv_8xb32_in1k': ('25.56M (folded)', '4.12G', 'mmpretrain ResNet-50'),
}


def _config_files(paths: List[str]) -> List[str]:
    files = []
    for path in paths:
        if osp.isdir(path):
            files.extend(sorted(glob.glob(osp.join(path, '**', '*.py'), recursive=True)))
        else:
            files.append(path)
    # `_base_` folders hold partial configs (schedules, datasets) without a model
    return [f for f in files if '__pycache__' not in f and '_base_' not in f.split(os.sep)]


def measure(config: str) -> Dict:
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mm_efficientconv  # noqa: F401
    from mm_efficientconv import switch_to_deploy

    cfg = Config.fromfile(config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    model.eval()
    is_classifier = type(model).__name__ == 'ImageClassifier'
    # classifiers: the crop of the config's pipelines; detectors/segmentors: 512x512
    x = torch.zeros(probe_shape(cfg, model, batch=1, shape=None if is_classifier else (512, 512)))
    size = tuple(x.shape[2:])

    class _Probe(nn.Module):

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x, mode='tensor') if is_classifier else self.m.extract_feat(x)

    params = parameter_count(model)['']
    # Traced with autograd on, as in training: MixConv then runs its per-group convs (under
    # no_grad it would take the fused zero-padded kernel, which costs more multiply-adds).
    flops = FlopAnalyzer(_Probe(model), (x, ))
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    total_flops = flops.total()
    switch_to_deploy(model)
    folded = parameter_count(model)['']
    return dict(config=osp.relpath(config), model=type(model).__name__, input=f'{size[0]}x{size[1]}',
                params=params, params_folded=folded, flops=total_flops,
                flops_scope='whole model' if is_classifier else 'backbone + neck')


def _human(n: float) -> str:
    for unit, div in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if n >= div:
            return f'{n / div:.2f}{unit}'
    return str(int(n))


def to_markdown(rows: List[Dict]) -> str:
    lines = ['| config | input | params | params (folded) | FLOPs | measured on | paper params | '
             'paper FLOPs | source |', '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        stem = osp.splitext(osp.basename(r['config']))[0]
        paper = PAPER.get(stem, ('-', '-', '-'))
        lines.append(f"| {stem} | {r['input']} | {r['params']:,} | {r['params_folded']:,} | "
                     f"{_human(r['flops'])} | {r['flops_scope']} | {paper[0]} | {paper[1]} | "
                     f'{paper[2]} |')
    return '\n'.join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('paths', nargs='+', help='config files or folders of configs')
    parser.add_argument('--out', help='write the markdown table here (and a .json beside it)')
    args = parser.parse_args(argv)
    rows = []
    for config in _config_files(args.paths):
        try:
            rows.append(measure(config))
        except Exception as exc:  # report and go on: one broken config must not hide the rest
            print(f'{config}: FAILED ({type(exc).__name__}: {exc})', file=sys.stderr)
            continue
        print(f"{rows[-1]['config']}: {rows[-1]['params']:,} params, {_human(rows[-1]['flops'])} FLOPs",
              flush=True)
    table = to_markdown(rows)
    print('\n' + table)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        for path, text in ((args.out, table + '\n'),
                           (osp.splitext(args.out)[0] + '.json', json.dumps(rows, indent=2))):
            with tempfile.NamedTemporaryFile('w', dir=osp.dirname(osp.abspath(path)), delete=False) as f:
                f.write(text)
            os.replace(f.name, path)
    return 1 if len(rows) < len(_config_files(args.paths)) else 0


if __name__ == '__main__':
    sys.exit(main())
