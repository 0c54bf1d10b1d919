# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""tools/deploy/export_onnx.py on small DO-Conv and MixConv classifiers (the
DO-Conv one as a subprocess like a user would run it, the others in-process
through the tool's ``main(argv)``)."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'deploy' / 'export_onnx.py'

CONFIG = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3, mean=[127.5] * 3,
                           std=[127.5] * 3),
    backbone={backbone},
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels={channels}))
"""
MODELS_UNDER_TEST = {
    'doconv': ("dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8, "
               "conv_cfg=dict(type='DOConv'))", 64, 'DOConv'),
    'mixconv': ("dict(type='MobileNetV2', widen_factor=0.25, "
                "conv_cfg=dict(type='MixConv', kernel_sizes=(3, 5, 7)))", 1280, 'MixConv'),
}


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models on a busy machine


def make(tmp_path, name):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    backbone, channels, layer = MODELS_UNDER_TEST[name]
    config = tmp_path / f'{name}_cfg.py'
    config.write_text(CONFIG.format(backbone=backbone, channels=channels))
    init_default_scope('mmpretrain')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model).eval()
    assert sum(type(m).__name__ == layer and not m.plain for m in model.modules()) > 0
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
    ckpt = tmp_path / f'{name}.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), ckpt)
    return str(config), str(ckpt), model


def run_inprocess(*args):
    spec = importlib.util.spec_from_file_location('export_onnx_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in args])


def run(*args):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    env.setdefault('OMP_NUM_THREADS', '1')  # tiny model: threads only add contention
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=str(REPO), timeout=240)


@pytest.mark.parametrize('name,subprocess_run', [('doconv', True), ('mixconv', False)])
def test_export_verifies_and_has_only_standard_convs(tmp_path, capsys, name, subprocess_run):
    config, ckpt, model = make(tmp_path, name)
    out = tmp_path / f'{name}.onnx'
    args = (config, ckpt, out, '--shape', 32, 32, '--batch', 2)
    if subprocess_run:
        proc = run(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        stdout = proc.stdout
    else:
        assert run_inprocess(*args) == 0
        stdout = capsys.readouterr().out
    diff = float(re.search(r'max \|onnxruntime - PyTorch\|:\s+(\S+)', stdout).group(1))
    assert diff < 1e-4
    assert 'ONNX ops:' in stdout and 'Einsum' not in stdout
    assert not [p for p in tmp_path.iterdir() if '.tmp.' in p.name]

    # independent check: the ONNX graph against the unfolded training model
    graph = onnx.load(str(out))
    ops = {node.op_type for node in graph.graph.node}
    assert 'Conv' in ops and not ops & {'Einsum', 'Split', 'Concat'}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    (logits, ) = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        expected = model(x, mode='tensor')
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)


def test_refuses_overwrite(tmp_path, capsys):
    config, ckpt, _ = make(tmp_path, 'doconv')
    out = tmp_path / 'exists.onnx'
    out.write_bytes(b'keep me')
    with pytest.raises(SystemExit) as exc:
        run_inprocess(config, ckpt, out)
    assert exc.value.code == 2 and '--force' in capsys.readouterr().err
    assert out.read_bytes() == b'keep me'
