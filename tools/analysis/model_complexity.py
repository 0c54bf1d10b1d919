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

With ``--metafiles`` the measured numbers are written into the model-zoo
metadata: ``Metadata`` (``Parameters``, ``Parameters (folded)``, ``FLOPs``,
``FLOPs Input``) of each config's entry in its folder's ``metafile.yml`` (an
entry is added where a config has none; entries of configs that no longer
exist are reported and removed), and the table between the
``<!-- model-complexity -->`` markers of the folder's ``README.md`` is
rendered again from the metafile.

Example:
    python tools/analysis/model_complexity.py configs --out work_dirs/complexity.md
    python tools/analysis/model_complexity.py configs/mixnet/mixnet-s_8xb32_in1k.py
    python tools/analysis/model_complexity.py configs --metafiles   # regenerate the metadata
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
import yaml

from mm_efficientconv.deploy import probe_shape  # the input size the deploy tools use

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


def measure(config: str, flops: bool = True) -> Dict:
    """Parameters (as built and after ``switch_to_deploy``) and, with
    ``flops``, the FLOPs of ``config``'s model; ``flops=False`` skips the
    traced forward (``flops`` is then None)."""
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
    total_flops = None
    if flops:
        # Traced with autograd on, as in training: MixConv then runs its per-group convs (under
        # no_grad it would take the fused zero-padded kernel, which costs more multiply-adds).
        analyzer = FlopAnalyzer(_Probe(model), (x, ))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total_flops = analyzer.total()
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


def _write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file in the same folder
    (never a half-written file)."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile('w', dir=folder, delete=False, encoding='utf-8') as f:
        f.write(text)
    os.replace(f.name, path)


# ---------------------------------------------------------------- model-zoo metadata
README_BEGIN = '<!-- model-complexity: rendered from metafile.yml by model_complexity.py --metafiles -->'
README_END = '<!-- /model-complexity -->'


def metadata_numbers(row: Dict) -> Dict:
    """The metafile ``Metadata`` entries of a :func:`measure` row (without
    the FLOPs ones when it was measured without FLOPs)."""
    numbers = {'Parameters': int(row['params']), 'Parameters (folded)': int(row['params_folded'])}
    if row['flops'] is not None:
        numbers.update({'FLOPs': int(row['flops']),
                        'FLOPs Input': f"{row['input']}, {row['flops_scope']}"})
    return numbers


def config_entry(config: str) -> Tuple[str, str, str]:
    """``(repository root, folder, Config value)`` of a config file; the value
    is the path from the repository root, ``configs/<folder>/<file>``."""
    parts = osp.abspath(config).split(os.sep)
    if 'configs' not in parts[:-1]:
        raise ValueError(f'{config}: a config must lie inside a `configs/` folder')
    index = len(parts) - 1 - parts[-2::-1].index('configs') - 1
    return os.sep.join(parts[:index]), os.sep.join(parts[:-1]), '/'.join(parts[index:])


def _models_table(meta: Dict) -> str:
    lines = ['| model | params | params (folded) | FLOPs | FLOPs measured on | paper params / FLOPs '
             '(source) | results | config |', '|---|---|---|---|---|---|---|---|']
    for model in meta.get('Models') or []:
        data = model.get('Metadata') or {}
        stem = osp.splitext(osp.basename(model['Config']))[0]
        paper = PAPER.get(stem)
        paper = f'{paper[0]} / {paper[1]} ({paper[2]})' if paper else '-'
        results = '; '.join(f"{k} {v}" for result in model.get('Results') or []
                            for k, v in (result.get('Metrics') or {}).items()) or '-'
        numbers = [f"{data[k]:,}" if k in data else '?' for k in ('Parameters', 'Parameters (folded)')]
        flops = _human(data['FLOPs']) if 'FLOPs' in data else '?'
        lines.append(f"| {model['Name']} | {numbers[0]} | {numbers[1]} | {flops} | "
                     f"{data.get('FLOPs Input', '?')} | {paper} | {results} | "
                     f"[{osp.basename(model['Config'])}]({osp.basename(model['Config'])}) |")
    return '\n'.join(lines)


def render_readme(readme: str, meta: Dict) -> str:
    """``readme`` with the table between the markers rendered from ``meta``."""
    begin, end = readme.find(README_BEGIN), readme.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f'the README has no {README_BEGIN!r} ... {README_END!r} block')
    return (readme[:begin + len(README_BEGIN)] + '\n' + _models_table(meta) + '\n' +
            readme[end:])


def update_metafiles(rows: List[Dict]) -> List[str]:
    """Writes the numbers of ``rows`` (from :func:`measure`) into the
    ``metafile.yml`` of each config's folder and renders that folder's
    ``README.md`` table; returns the files written.

    A config without an entry gets one (name = file stem) in the folder's only
    collection; entries whose config file is gone are removed. The
    collections themselves (paper, code, architecture) are written by hand.
    """
    folders: Dict[str, Dict[str, Dict]] = {}
    for row in rows:
        root, folder, key = config_entry(row['config'])
        folders.setdefault(folder, {})[key] = metadata_numbers(row)
    written = []
    for folder, numbers in sorted(folders.items()):
        path = osp.join(folder, 'metafile.yml')
        if not osp.isfile(path):
            raise FileNotFoundError(f'{path} does not exist: write its Collections (Name, '
                                    'Metadata.Architecture, Paper, README, Code) first')
        with open(path, encoding='utf-8') as f:
            meta = yaml.safe_load(f) or {}
        collections = meta.get('Collections') or []
        models = []
        for model in meta.get('Models') or []:
            if osp.isfile(osp.join(root, model['Config'])):
                models.append(model)
            else:
                print(f"{path}: removed {model['Name']} ({model['Config']} does not exist)")
        known = {model['Config']: model for model in models}
        for key, values in sorted(numbers.items()):
            if key not in known:
                if len(collections) != 1:
                    raise ValueError(f'{path}: add an entry for {key} by hand (the file has '
                                     f'{len(collections)} collections, which one is it in?)')
                known[key] = dict(Name=osp.splitext(osp.basename(key))[0],
                                  **{'In Collection': collections[0]['Name']}, Config=key,
                                  Metadata={}, Results=[])
                models.append(known[key])
                print(f'{path}: added {key}')
            known[key]['Metadata'] = dict(known[key].get('Metadata') or {}, **values)
        meta['Models'] = models
        _write_atomic(path, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100))
        written.append(path)
        readme = osp.join(folder, 'README.md')
        if osp.isfile(readme):
            with open(readme, encoding='utf-8') as f:
                text = f.read()
            _write_atomic(readme, render_readme(text, meta))
            written.append(readme)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('paths', nargs='+', help='config files or folders of configs')
    parser.add_argument('--out', help='write the markdown table here (and a .json beside it)')
    parser.add_argument('--metafiles', action='store_true',
                        help="write the numbers into each config folder's metafile.yml and "
                        'README.md table')
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
        _write_atomic(args.out, table + '\n')
        _write_atomic(osp.splitext(args.out)[0] + '.json', json.dumps(rows, indent=2))
    if args.metafiles:
        for path in update_metafiles(rows):
            print(f'wrote {path}')
    return 1 if len(rows) < len(_config_files(args.paths)) else 0


if __name__ == '__main__':
    sys.exit(main())
