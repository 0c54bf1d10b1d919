# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Model-zoo metadata: ``model-index.yml``, ``configs/*/metafile.yml`` and the
tables of ``configs/*/README.md`` against the configs and the numbers
``tools/analysis/model_complexity.py`` measures.

All numbers (parameters, folded parameters, FLOPs) of a representative config
per conv family are measured in the fast suite; the parameters of every other
config in the ``slow`` one (their FLOPs are not re-traced: ~8 minutes).
Regenerate everything with
``python tools/analysis/model_complexity.py configs --metafiles``.
"""
import os.path as osp
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'analysis'))
from model_complexity import (_config_files, config_entry, measure,  # noqa: E402
                              metadata_numbers, render_readme)

CONFIGS = sorted(config_entry(c)[2] for c in _config_files([str(REPO / 'configs')]))
# BSConv-U CIFAR ResNet, MixConv MixNet, DO-Conv ResNet-50 (folds to fewer parameters),
# BSConv-S MobileNetV2 in an mmdet detector (backbone + neck FLOPs)
MEASURED_FAST = [
    'configs/bsconv/resnet110-bsconvu_1xb128_cifar10.py',
    'configs/mixnet/mixnet-s_8xb32_in1k.py',
    'configs/doconv/resnet50-doconv_8xb32_in1k.py',
    'configs/bsconv/ssdlite_mobilenet-v2-bsconvs_8xb24-600e_coco.py',
]


def _load(path):
    with open(REPO / path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def _metafiles():
    return _load('model-index.yml')['Import']


def _entries():
    """``Config`` -> list of (metafile, model entry)."""
    entries = {}
    for path in _metafiles():
        for model in _load(path)['Models']:
            entries.setdefault(model['Config'], []).append((path, model))
    return entries


def test_model_index_imports_one_metafile_per_config_folder():
    folders = sorted({osp.dirname(c) for c in CONFIGS})
    assert sorted(_metafiles()) == [f'{folder}/metafile.yml' for folder in folders]
    assert all((REPO / path).is_file() for path in _metafiles())


def test_collections_describe_paper_code_and_readme():
    for path in _metafiles():
        meta = _load(path)
        assert meta['Collections'], path
        for collection in meta['Collections']:
            assert collection['Paper']['URL'].startswith('https://arxiv.org/abs/')
            assert collection['Paper']['Title']
            assert collection['Metadata']['Architecture']
            assert (REPO / collection['README']).is_file()
            assert (REPO / collection['Code']['URL']).is_file()
            assert collection['Code']['Version'] == 'v0.1.0'
        names = {c['Name'] for c in meta['Collections']}
        assert all(model['In Collection'] in names for model in meta['Models']), path


def test_every_config_has_exactly_one_entry():
    entries = _entries()
    assert sorted(entries) == CONFIGS  # none missing, none for a config that is gone
    assert all(len(found) == 1 for found in entries.values())
    names = [model['Name'] for found in entries.values() for _, model in found]
    assert len(names) == len(set(names))
    for config, [(path, model)] in entries.items():
        # mmengine resolves `mm_efficientconv::<folder>/<file>` through these paths
        assert osp.dirname(config) == osp.dirname(path)
        data = model['Metadata']
        for key in ('Parameters', 'Parameters (folded)', 'FLOPs'):
            assert isinstance(data[key], int) and data[key] > 0, (config, key)
        assert data['FLOPs Input']
        assert isinstance(model['Results'], list)


def test_readme_tables_are_rendered_from_the_metafiles():
    for path in _metafiles():
        readme = (REPO / osp.dirname(path) / 'README.md').read_text(encoding='utf-8')
        assert readme == render_readme(readme, _load(path)), \
            f'{path}: run python tools/analysis/model_complexity.py configs --metafiles'


def _check_numbers(config, keys):
    [(_, model)] = _entries()[config]
    row = measure(str(REPO / config), flops='FLOPs' in keys)
    measured = {key: value for key, value in metadata_numbers(row).items() if key in keys}
    recorded = {key: model['Metadata'].get(key) for key in measured}
    assert recorded == measured, \
        f'{config}: run python tools/analysis/model_complexity.py configs --metafiles'


@pytest.mark.parametrize('config', MEASURED_FAST)
def test_metafile_numbers_equal_measurement(config):
    _check_numbers(config, ('Parameters', 'Parameters (folded)', 'FLOPs', 'FLOPs Input'))


@pytest.mark.slow
@pytest.mark.parametrize('config', [c for c in CONFIGS if c not in MEASURED_FAST])
def test_metafile_parameters_equal_measurement_every_config(config):
    """Parameters of every other config (building a model is cheap; tracing
    the FLOPs of all of them takes ~8 minutes on 2 loaded cores)."""
    _check_numbers(config, ('Parameters', 'Parameters (folded)'))
