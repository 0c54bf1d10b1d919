# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv.deploy.convert: the switch_to_deploy protocol, fold_model and
cpu_copy; the old import paths keep working."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mm_efficientconv.deploy import count_deployable, cpu_copy, fold_model, switch_to_deploy

pytestmark = pytest.mark.usefixtures('one_thread')


class _Foldable(nn.Module):
    """Follows the protocol: returns the plain conv its parent should hold."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.deploy = False

    def forward(self, x):
        return self.conv(x) * 2

    def switch_to_deploy(self):
        conv = nn.Conv2d(2, 2, 3, padding=1).to(self.conv.weight.device).train(self.training)
        with torch.no_grad():
            conv.weight.copy_(self.conv.weight * 2)
            conv.bias.copy_(self.conv.bias * 2)
        return conv


class _InPlace(nn.Module):
    """Follows the protocol mmpretrain's RepVGG blocks use: converts itself, returns None."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(3.0))
        self.deploy = False

    def forward(self, x):
        return x * self.scale

    def switch_to_deploy(self):
        self.deploy = True


def _model():
    torch.manual_seed(0)
    return nn.Sequential(_Foldable(), nn.BatchNorm2d(2), nn.Sequential(_InPlace(), _Foldable()))


def test_switch_to_deploy_replaces_children_and_keeps_function():
    model = _model().eval()
    x = torch.randn(2, 2, 5, 5)
    expected = model(x)
    assert count_deployable(model) == 3
    assert switch_to_deploy(model) is model
    assert type(model[0]) is nn.Conv2d and type(model[2][1]) is nn.Conv2d
    assert model[2][0].deploy and count_deployable(model) == 0
    torch.testing.assert_close(model(x), expected)
    assert switch_to_deploy(model) is model  # idempotent


def test_switch_to_deploy_keeps_training_mode_and_returns_a_replaced_root():
    layer = _Foldable().train()
    new = switch_to_deploy(layer)
    assert type(new) is nn.Conv2d and new.training
    with pytest.raises(TypeError, match='model must be an nn.Module'):
        switch_to_deploy('resnet')


def test_fold_model_fuses_conv_bn():
    model = _model().eval()
    model[1].running_var.fill_(2.0)
    x = torch.randn(1, 2, 5, 5)
    expected = model(x)
    folded, num = fold_model(model, fuse_conv_bn=True)
    assert num == 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-6)


def test_cpu_copy_leaves_the_model_alone():
    model = _model().train()
    params = {name: p for name, p in model.named_parameters()}
    values = {name: p.detach().clone() for name, p in params.items()}
    copied = cpu_copy(model)
    assert copied.training and all(m.training for m in copied.modules())
    for (name, p), (copy_name, q) in zip(model.named_parameters(), copied.named_parameters()):
        assert name == copy_name and q is not p and q.device.type == 'cpu'
        assert q.untyped_storage().data_ptr() != p.untyped_storage().data_ptr()
        assert q.requires_grad == p.requires_grad
        torch.testing.assert_close(q, p, rtol=0, atol=0)
    for b, c in zip(model.buffers(), copied.buffers()):
        assert c is not b and c.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
    switch_to_deploy(copied)  # changing the copy does not reach the original
    with torch.no_grad():
        next(copied.parameters()).add_(1)
    assert {name: p for name, p in model.named_parameters()} == params
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, values[name], rtol=0, atol=0)
    assert count_deployable(model) == 3 and model.training


def test_cpu_copy_keeps_frozen_parameters_frozen():
    model = _model()
    model[0].conv.weight.requires_grad_(False)
    assert not cpu_copy(model)[0].conv.weight.requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cpu_copy_of_a_cuda_model():
    model = _model().cuda()
    ids = [id(p) for p in model.parameters()]
    copied = cpu_copy(model)
    assert all(p.device.type == 'cpu' for p in copied.parameters())
    assert all(p.is_cuda for p in model.parameters()) and [id(p) for p in model.parameters()] == ids


def test_old_import_paths():
    from mm_efficientconv import switch_to_deploy as top
    from mm_efficientconv.layers import switch_to_deploy as from_layers
    from mm_efficientconv.layers.deploy import count_deployable as old_count
    from mm_efficientconv.layers.deploy import fold_model as old_fold
    assert top is from_layers is switch_to_deploy
    assert old_count is count_deployable and old_fold is fold_model
    with pytest.raises(AttributeError, match='no attribute'):
        importlib.import_module('mm_efficientconv.layers.deploy').not_a_name
    from mm_efficientconv.hooks.deploy import atomic_torch_save, cpu_state_dict, plain_meta
    import mm_efficientconv.deploy as deploy
    assert (atomic_torch_save, cpu_state_dict, plain_meta) == (
        deploy.atomic_torch_save, deploy.cpu_state_dict, deploy.plain_meta)


def test_onnx_export_module_is_a_deprecated_alias():
    code = ('import warnings\n'
            'warnings.simplefilter("always")\n'
            'import mm_efficientconv.deploy as deploy\n'
            'with warnings.catch_warnings(record=True) as caught:\n'
            '    warnings.simplefilter("always")\n'
            '    from mm_efficientconv.onnx_export import export_onnx, is_classifier, flatten_outputs\n'
            'assert export_onnx is deploy.export_onnx and is_classifier is deploy.is_classifier\n'
            'assert flatten_outputs is deploy.flatten_outputs\n'
            'print([str(w.message) for w in caught if w.category is DeprecationWarning])\n')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'mm_efficientconv.onnx_export is deprecated' in proc.stdout


@pytest.mark.parametrize('module', ['convert', 'stock', 'checkpoint', 'fold', 'onnx_export'])
def test_deploy_modules_import_no_layer_codebase_or_onnx(module):
    """At module level the deploy package depends on torch/mmengine and itself only (the
    protocol is duck-typed; onnx and the codebases load on use)."""
    source = Path(importlib.import_module(f'mm_efficientconv.deploy.{module}').__file__).read_text()
    imported = set()
    for node in ast.parse(source).body:  # module level only; imports inside functions load on use
        if isinstance(node, ast.Import):
            imported.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add('.' if node.level else node.module.split('.')[0])
    assert imported and imported <= {'collections', 'copy', 'json', 'os', 'subprocess', 'sys',
                                     'tempfile', 'torch', 'typing', 'warnings', '.'}, imported
