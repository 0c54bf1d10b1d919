# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv.deploy.stock: loads and runs without the plugin, probes follow the
model's device, output comparison and probe shapes."""
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mm_efficientconv.deploy import stock


def test_loads_by_path_without_the_plugin():
    """What the stock check relies on: a clean interpreter can load and use the module
    without importing mm_efficientconv (or a codebase)."""
    code = f'''
import importlib.util, sys
spec = importlib.util.spec_from_file_location('_stock', {stock.__file__!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
import torch
assert module.max_abs_diff([torch.ones(2)], [torch.zeros(2)]) == 1.0
print(sorted(m for m in sys.modules if m.split('.')[0] in
             ('mm_efficientconv', 'mmdet', 'mmseg', 'mmpretrain')))
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == '[]'


class _Classifier(nn.Module):
    """Duck-types the two deployed functions."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.devices = []

    def forward(self, x, mode='tensor'):
        assert mode == 'tensor'
        self.devices.append(x.device)
        return self.fc(x.mean((2, 3)))


class _Detector(_Classifier):

    def extract_feat(self, x):
        return (x, {'b': x * 2})


def test_deployed_outputs_and_probe_forward():
    x = torch.randn(1, 3, 4, 4)
    detector = _Detector()
    assert stock.exports_features(detector) and not stock.exports_features(_Classifier())
    outputs = stock.probe_forward(detector, x.double())
    assert [t.dtype for t in outputs] == [torch.float32] * 2
    torch.testing.assert_close(outputs[1], 2 * x)
    classifier = _Classifier()
    (logits, ) = stock.probe_forward(classifier, x)
    assert logits.shape == (1, 2) and not logits.requires_grad
    assert classifier.devices == [classifier.fc.weight.device]


def test_probe_input_follows_the_model_device(monkeypatch):
    """The probe batch is moved to the model's device (simulated: a model whose parameters
    report another device; the move itself is recorded)."""
    moved = []
    real_to = torch.Tensor.to

    def record_to(self, *args, **kwargs):
        moved.append(args[0] if args else kwargs.get('device'))
        return real_to(self, *args, **kwargs)

    classifier = _Classifier()
    monkeypatch.setattr(torch.Tensor, 'to', record_to)
    stock.probe_forward(classifier, torch.randn(1, 3, 4, 4))
    assert moved == [classifier.fc.weight.device]


def test_max_abs_diff_checks_structure():
    assert stock.max_abs_diff([], []) == 0.0
    assert stock.max_abs_diff([torch.ones(2, dtype=torch.float64)], [torch.zeros(2)]) == 1.0
    with pytest.raises(RuntimeError, match='output structures differ'):
        stock.max_abs_diff([torch.ones(2)], [torch.ones(3)])
    with pytest.raises(RuntimeError, match='output structures differ'):
        stock.max_abs_diff([torch.ones(2)], [])


def test_probe_shape_from_the_last_pipeline_size(tmp_path):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(
        "test_dataloader = dict(dataset=dict(pipeline=[dict(type='ResizeEdge', scale=256),\n"
        "    dict(type='CenterCrop', crop_size=(200, 100))]))\n")
    cfg = Config.fromfile(str(cfg_file))
    # is_classifier goes by name (mmpretrain need not be imported): an mmpretrain BaseClassifier
    base = type('BaseClassifier', (nn.Module, ), {'__module__': 'mmpretrain.models.classifiers'})
    classifier = type('TinyClassifier', (_Classifier, base), {})()
    assert stock.is_classifier(classifier) and not stock.is_classifier(_Classifier())
    assert stock.probe_shape(cfg, classifier, batch=3) == (3, 3, 100, 200)
    assert stock.probe_shape(cfg, classifier, shape=(7, 9)) == (2, 3, 7, 9)
    assert stock.probe_shape(cfg, _Detector()) == (2, 3) + stock.DEFAULT_DETECTION_SHAPE
