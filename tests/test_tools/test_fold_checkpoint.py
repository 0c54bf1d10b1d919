# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""tools/deploy/fold_checkpoint.py: once as a subprocess like a user would run
it, the other cases in-process through its ``main(argv)`` (same code path,
without paying the interpreter start-up again)."""
import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / 'tools' / 'deploy' / 'fold_checkpoint.py'

CONFIG = """
default_scope = 'mmpretrain'
{imports}
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3, mean=[127.5] * 3,
                           std=[127.5] * 3),
    backbone=dict(type='ResNet_CIFAR', depth={depth}, stem_channels=8, base_channels=8,
                  conv_cfg={conv_cfg}),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=64))
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='Resize', scale=16),
                 dict(type='PackInputs')]
test_dataloader = dict(batch_size=2, num_workers=0,
                       dataset=dict(type='CustomDataset', data_root='unused',
                                    pipeline=test_pipeline))
"""
PLUGIN_IMPORTS = "custom_imports = dict(imports=['mm_efficientconv'], allow_failed_imports=False)"


pytestmark = pytest.mark.usefixtures('one_thread')  # tiny models on a busy machine


def write_config(path, conv_cfg=None, depth=18):
    imports = PLUGIN_IMPORTS if conv_cfg else ''
    path.write_text(CONFIG.format(imports=imports, conv_cfg=conv_cfg, depth=depth))
    return str(path)


def build(config):
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(config)
    init_default_scope('mmpretrain')
    return MODELS.build(cfg.model).eval()


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A DO-Conv training checkpoint (random D, weights and BN statistics) with
    a message hub, as mmengine's CheckpointHook writes them."""
    from mmengine.logging import MessageHub
    tmp = tmp_path_factory.mktemp('fold')
    plugin = write_config(tmp / 'doconv_cfg.py', conv_cfg="dict(type='DOConv')")
    stock = write_config(tmp / 'stock_cfg.py')
    model = build(plugin)
    assert sum(type(m).__name__ == 'DOConv' for m in model.modules()) > 0
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
    hub = MessageHub.get_instance('fold_checkpoint_test')
    hub.update_scalar('train/loss', 1.0)
    ckpt = tmp / 'iter_10.pth'
    torch.save(
        dict(meta=dict(epoch=1, iter=10, dataset_meta=dict(classes=('a', 'b', 'c'))),
             state_dict=model.state_dict(), message_hub=hub.state_dict()), ckpt)
    return dict(tmp=tmp, plugin=plugin, stock=stock, ckpt=str(ckpt), model=model)


def load_tool():
    spec = importlib.util.spec_from_file_location('fold_checkpoint_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_inprocess(*args):
    return load_tool().main([str(a) for a in args])


def run(*args):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
    env.setdefault('OMP_NUM_THREADS', '1')  # tiny model: threads only add contention
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=str(REPO), timeout=240)


def probe(model, x):
    with torch.no_grad():
        return model(x, mode='tensor')


def test_fold_matches_stock_config(files):
    out = files['tmp'] / 'iter_10_deploy.pth'
    before = sha256(files['ckpt'])
    mtime = os.stat(files['ckpt']).st_mtime_ns
    proc = run(files['plugin'], files['ckpt'], out, '--check-stock-config', files['stock'])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'strict load ok' in proc.stdout
    assert 'probe input:     (2, 3, 16, 16)' in proc.stdout  # from the Resize of the pipeline
    assert sha256(files['ckpt']) == before and os.stat(files['ckpt']).st_mtime_ns == mtime
    assert not [p for p in files['tmp'].iterdir() if '.tmp.' in p.name]

    saved = torch.load(out, map_location='cpu', weights_only=True)  # plain, no compat needed
    stock = build(files['stock'])
    assert list(saved) == ['state_dict', 'meta']
    assert set(saved['state_dict']) == set(stock.state_dict())
    meta = saved['meta']
    assert meta['deploy'] is True and meta['dataset_meta']['classes'] == ('a', 'b', 'c')
    assert meta['folded_modules'] > 0 and meta['params_after'] < meta['params_before']
    assert meta['params_after'] == sum(p.numel() for p in stock.parameters())

    # the stock model (mmpretrain's own nn.Conv2d) reproduces the DO-Conv model
    stock.load_state_dict(saved['state_dict'], strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(probe(stock, x), probe(files['model'], x), rtol=1e-4, atol=1e-5)


def test_refuses_overwrite_and_force(files, capsys):
    out = files['tmp'] / 'existing.pth'
    out.write_bytes(b'keep me')
    with pytest.raises(SystemExit) as exc:
        run_inprocess(files['plugin'], files['ckpt'], out)
    assert exc.value.code == 2 and '--force' in capsys.readouterr().err
    assert out.read_bytes() == b'keep me'

    # the input is never the output, not even with --force
    before = sha256(files['ckpt'])
    with pytest.raises(SystemExit) as exc:
        run_inprocess(files['plugin'], files['ckpt'], files['ckpt'], '--force')
    assert exc.value.code == 2 and 'input' in capsys.readouterr().err
    assert sha256(files['ckpt']) == before

    assert run_inprocess(files['plugin'], files['ckpt'], out, '--force', '--fuse-conv-bn') == 0
    assert 'layers folded:   20 (+ conv-BN fusion)' in capsys.readouterr().out
    saved = torch.load(out, map_location='cpu', weights_only=True)
    assert saved['meta']['fuse_conv_bn'] is True
    assert not [k for k in saved['state_dict'] if 'running_mean' in k]
    fused = build(files['stock'])
    from mmcv.cnn import fuse_conv_bn
    fused = fuse_conv_bn(fused)
    fused.load_state_dict(saved['state_dict'], strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(probe(fused, x), probe(files['model'], x), rtol=1e-4, atol=1e-5)


def test_fuse_conv_bn_excludes_stock_check(files, capsys):
    with pytest.raises(SystemExit) as exc:
        run_inprocess(files['plugin'], files['ckpt'], files['tmp'] / 'x.pth', '--fuse-conv-bn',
                      '--check-stock-config', files['stock'])
    assert exc.value.code == 2 and '--fuse-conv-bn' in capsys.readouterr().err
    assert not (files['tmp'] / 'x.pth').exists()


def test_stock_check_detects_other_architecture(files):
    from mm_efficientconv.deploy import probe_forward, stock_check
    other = write_config(files['tmp'] / 'stock_r34_cfg.py', depth=34)
    model = build(files['stock'])
    ckpt = files['tmp'] / 'stock_like.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    x = torch.zeros(1, 3, 16, 16)
    torch.save(dict(input=x, outputs=probe_forward(model, x)), files['tmp'] / 'probe.pth')
    result = stock_check(other, str(ckpt), str(files['tmp'] / 'probe.pth'))
    assert result['missing'] and not result['unexpected'] and 'max_abs_diff' not in result
    result = stock_check(files['stock'], str(ckpt), str(files['tmp'] / 'probe.pth'))
    assert not result['missing'] and not result['unexpected'] and result['max_abs_diff'] == 0


def test_failed_stock_check_writes_nothing(files, capsys):
    """The stock check runs on a candidate file; OUT appears only when it passes."""
    other = write_config(files['tmp'] / 'stock_r34_for_fail_cfg.py', depth=34)
    out = files['tmp'] / 'never_written.pth'
    assert run_inprocess(files['plugin'], files['ckpt'], out, '--check-stock-config', other) == 1
    captured = capsys.readouterr()
    assert 'keys differ from' in captured.err and 'nothing written' in captured.err
    assert 'layers folded:' in captured.out and 'saved:' not in captured.out
    assert not out.exists()
    assert not [p for p in files['tmp'].iterdir() if p.name.startswith('.fold_') or '.tmp.' in p.name]
