"""Issue acceptance on the shipped configs: a DO-Conv Faster R-CNN and a DO-Conv DeepLabV3
checkpoint fold and load strictly into the stock mmdet / mmseg configs in a process that never
imports mm_efficientconv (outputs within 1e-4); the DO-Conv ResNet-50 and MixNet-S classifiers
export to ONNX and match onnxruntime within 1e-4."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
FOLD = REPO / 'tools' / 'deploy' / 'fold_checkpoint.py'
EXPORT = REPO / 'tools' / 'deploy' / 'export_onnx.py'


def _random_training_checkpoint(config, path):
    """A checkpoint of CONFIG's model as training could leave it: initialised weights, every
    DO-Conv D' and BN statistic moved away from its initial value (so the fold is not
    trivial)."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    import mm_efficientconv  # noqa: F401
    cfg = Config.fromfile(str(config))
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None  # no pretrained download
    cfg.model.backbone.pop('pretrained', None)
    cfg.model.pop('pretrained', None)  # mmseg puts it on the segmentor
    model = MODELS.build(cfg.model)
    model.init_weights()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('.D'):  # DO-Conv's D' (zero at init)
                p.normal_(0, 0.05, generator=g)
        for name, b in model.named_buffers():
            if name.endswith('running_var'):
                b.uniform_(0.5, 1.5, generator=g)
            elif name.endswith('running_mean'):
                b.normal_(0, 0.1, generator=g)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)


@pytest.mark.slow
@pytest.mark.parametrize('config,stock', [
    ('configs/doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py',
     'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'),
    ('configs/doconv/deeplabv3_r50-d8-doconv_4xb4-20k_voc12aug-512x512.py',
     'mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py'),
])
def test_fold_loads_into_stock_config(tmp_path, config, stock):
    ckpt = tmp_path / 'train.pth'
    _random_training_checkpoint(REPO / config, ckpt)
    out = tmp_path / 'deploy.pth'
    proc = subprocess.run(
        [sys.executable, str(FOLD), config, str(ckpt), str(out), '--check-stock-config', stock],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    stock_line = next(line for line in text.splitlines() if line.startswith('stock config:'))
    assert 'strict load ok' in stock_line
    assert float(stock_line.rsplit(' ', 1)[-1]) <= 1e-4, stock_line
    fold_line = next(line for line in text.splitlines() if 'folded - original' in line)
    assert float(fold_line.rsplit(' ', 1)[-1]) <= 1e-4, fold_line
    folded = torch.load(out, map_location='cpu')['state_dict']
    assert not any(k.endswith(('.W', '.D')) for k in folded)
    print(text[-1500:])


@pytest.mark.slow
@pytest.mark.parametrize('config,ops_forbidden', [
    ('configs/doconv/resnet50-doconv_8xb32_in1k.py', ('Einsum', 'MatMul')),
    ('configs/mixnet/mixnet-s_8xb32_in1k.py', ('Einsum', 'Split')),
])
def test_onnx_export_of_paper_classifiers(tmp_path, config, ops_forbidden):
    ckpt = tmp_path / 'train.pth'
    _random_training_checkpoint(REPO / config, ckpt)
    out = tmp_path / 'model.onnx'
    proc = subprocess.run(
        [sys.executable, str(EXPORT), config, str(ckpt), str(out), '--shape', '224', '224',
         '--tol', '1e-4'], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.is_file()
    ops_line = next(line for line in proc.stdout.splitlines() if line.startswith('ONNX ops:'))
    assert 'Conv' in ops_line
    assert not any(f'{op}:' in ops_line for op in ops_forbidden), ops_line
    diff_line = next(line for line in proc.stdout.splitlines() if 'onnxruntime - PyTorch' in line)
    assert float(diff_line.rsplit(' ', 1)[-1]) <= 1e-4, diff_line
    print(proc.stdout[-1500:])
