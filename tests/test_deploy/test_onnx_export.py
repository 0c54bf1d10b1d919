# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""mm_efficientconv.deploy.export_onnx exports a CPU copy: the caller's model keeps its
device, parameter objects, values, layers and training mode (the CLI is tested in
tests/test_tools/test_export_onnx.py)."""
import pytest
import torch
import torch.nn as nn

from mm_efficientconv.deploy import count_deployable, export_onnx

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

pytestmark = pytest.mark.usefixtures('one_thread')


def _classifier():
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8,
                           conv_cfg=dict(type='DOConv')),
             neck=dict(type='GlobalAveragePooling'),
             head=dict(type='LinearClsHead', num_classes=3, in_channels=64)))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('.D'):
                p.normal_(0, 0.05)
    return model


def _state(model):
    return dict(device={p.device for p in model.parameters()},
                ids=[id(p) for p in model.parameters()],
                modes=[m.training for m in model.modules()],
                types=[type(m).__name__ for m in model.modules()],
                deployable=count_deployable(model))


@pytest.mark.parametrize('train_mode', [True, False])
def test_export_leaves_the_model_alone(tmp_path, mmpretrain_scope, train_mode):
    model = _classifier().train(train_mode)
    before = _state(model)
    values = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / 'm.onnx'
    report = export_onnx(model, str(out), (2, 3, 16, 16))
    assert out.is_file() and report['folded'] == before['deployable'] > 0
    assert report['max_abs_diff'] <= 1e-4 and 'Einsum' not in report['ops']
    assert _state(model) == before
    for key, value in model.state_dict().items():  # BN statistics untouched too
        torch.testing.assert_close(value, values[key], rtol=0, atol=0, msg=key)

    # the exported function is the caller's model in eval mode
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    (logits, ) = ort.InferenceSession(str(out), providers=['CPUExecutionProvider']).run(
        None, {'input': x.numpy()})
    model.eval()
    with torch.no_grad():
        expected = model(x, mode='tensor')
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)


def test_export_refuses_overwrite_and_writes_nothing_on_mismatch(tmp_path, monkeypatch,
                                                                 mmpretrain_scope):
    model = _classifier().eval()
    out = tmp_path / 'm.onnx'
    out.write_bytes(b'keep')
    with pytest.raises(FileExistsError, match='force=True'):
        export_onnx(model, str(out), (1, 3, 16, 16))
    assert out.read_bytes() == b'keep'

    class _OffByOne(ort.InferenceSession):  # a runtime that computes something else

        def run(self, *args, **kwargs):
            return [r + 1 for r in super().run(*args, **kwargs)]

    monkeypatch.setattr(ort, 'InferenceSession', _OffByOne)
    with pytest.raises(RuntimeError, match='nothing written'):
        export_onnx(model, str(tmp_path / 'bad.onnx'), (1, 3, 16, 16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.onnx']
    with pytest.raises(ValueError, match='tol'):
        export_onnx(model, str(tmp_path / 'x.onnx'), (1, 3, 16, 16), tol=-1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_export_of_a_cuda_model(tmp_path, mmpretrain_scope):
    model = _classifier().cuda().train()
    before = _state(model)
    report = export_onnx(model, str(tmp_path / 'm.onnx'), (2, 3, 16, 16))
    assert report['max_abs_diff'] <= 1e-4
    assert _state(model) == before and before['device'] == {torch.device('cuda', 0)}


def test_export_keeps_a_bare_layer(tmp_path):
    """A model that is one layer replaced by folding (the copy is replaced, not the model)."""
    from mm_efficientconv import DOConv

    class _Net(nn.Module):

        def __init__(self):
            super().__init__()
            self.conv = DOConv(3, 4, 3, padding=1)

        def forward(self, x, mode='tensor'):
            return self.conv(x)

    net = _Net().eval()
    report = export_onnx(net, str(tmp_path / 'n.onnx'), (1, 3, 8, 8))
    assert report['folded'] == 1 and type(net.conv).__name__ == 'DOConv'
