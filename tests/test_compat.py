"""The pinned stack's compatibility fixes (mm_efficientconv/compat.py) and import hygiene:
`import mm_efficientconv` imports no mmdet/mmseg, works where they reject mmcv, and applies each
fix only where it is needed."""
import importlib
import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mm_efficientconv  # noqa: F401  (applies the fixes)

REPO = Path(__file__).resolve().parents[1]


class _TinyRegressor(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x, y=None, mode='tensor'):
        out = self.fc(x)
        if mode == 'loss':
            return {'loss_mse': ((out - y)**2).mean()}
        return out


class _TinyData(Dataset):

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(16, 4, generator=g)
        self.y = torch.randn(16, 2, generator=g)

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return dict(x=self.x[i], y=self.y[i])


def _runner(work_dir, max_epochs, resume=False, load_from=None):
    torch.manual_seed(0)  # the same initial weights for every run
    return Runner(
        model=_TinyRegressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(
            dataset=_TinyData(),
            sampler=dict(type='DefaultSampler', shuffle=True),
            collate_fn=dict(type='default_collate'),
            batch_size=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        default_scope='mmengine')


def test_runner_resume_under_weights_only_default(tmp_path):
    # Reference: two uninterrupted epochs.
    full = _runner(tmp_path / 'full', max_epochs=2)
    full.train()
    expected = {k: v.clone() for k, v in full.model.state_dict().items()}

    # One epoch, saved; then a new Runner resumes from that checkpoint (auto-resume, as
    # `tools/train.py --resume` does) and finishes the second epoch.
    first = _runner(tmp_path / 'split', max_epochs=1)
    first.train()
    ckpt = tmp_path / 'split' / 'epoch_1.pth'
    assert ckpt.is_file()
    # A plain torch.load with torch's default (weights_only=True under torch >= 2.6) works.
    state = torch.load(ckpt, map_location='cpu')
    assert isinstance(state['message_hub']['log_scalars']['train/loss_mse'], HistoryBuffer)

    second = _runner(tmp_path / 'split', max_epochs=2, resume=True)
    second.train()
    assert second.epoch == 2 and second.iter == 8
    for key, value in second.model.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=1e-6)


def test_resume_from_explicit_path(tmp_path):
    first = _runner(tmp_path / 'a', max_epochs=1)
    first.train()
    second = _runner(tmp_path / 'b', max_epochs=2, resume=True, load_from=str(tmp_path / 'a' / 'epoch_1.pth'))
    second.train()
    assert second.epoch == 2


def test_safe_loading_stays_safe():
    """The getattr global is mapped to a restricted version: a checkpoint cannot use it
    to reach arbitrary callables."""

    class _Evil:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    buffer = io.BytesIO()
    torch.save({'x': _Evil()}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError, match='refuses getattr'):
        torch.load(buffer, weights_only=True)

    class _Sys:

        def __reduce__(self):
            import os
            return (os.system, ('true', ))

    buffer = io.BytesIO()
    torch.save({'x': _Sys()}, buffer)
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(buffer, weights_only=True)


def test_public_statistics_methods_resolve():
    buffer = io.BytesIO()
    hb = HistoryBuffer()
    hb.update(3.0)
    torch.save({'hb': hb}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)['hb']
    assert loaded.mean() == 3.0


@pytest.mark.parametrize('base', [
    'mmpretrain::resnet/resnet18_8xb16_cifar10.py',
    'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
    'mmseg::deeplabv3/deeplabv3_r50-d8_4xb2-80k_cityscapes-512x1024.py',
])
def test_codebase_config_bases_resolve(tmp_path, base):
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(f"_base_ = '{base}'\n")
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.model.type in ('ImageClassifier', 'FasterRCNN', 'EncoderDecoder')


def test_pkg_resources_available():
    import pkg_resources  # noqa: F401  (mmengine needs it for `mmdet::` bases)


def test_pytest_runs_this_projects_tests():
    """The mmseg wheel installs a top-level `tests` package; ours must be what runs."""
    assert Path(__file__).resolve().is_relative_to(REPO / 'tests')
    out = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q', 'tests/test_compat.py'],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'tests/test_compat.py::test_pytest_runs_this_projects_tests' in out.stdout


def test_mmdet_ssd_head_predicts():
    """mmdet 3.3.0's SSDHead.predict reads the never-set `loss_cls` (mmdetection#11305);
    the compat fix makes SSD/SSDLite validation work."""
    from mmdet.models.dense_heads import SSDHead
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):
        _check_ssd_head_predict(SSDHead, ConfigDict)


def _check_ssd_head_predict(SSDHead, ConfigDict):  # noqa: N803
    head = SSDHead(
        num_classes=2,
        in_channels=(4, 4),
        anchor_generator=dict(
            type='SSDAnchorGenerator', scale_major=False, input_size=64, strides=[16, 32],
            ratios=[[2], [2]], min_sizes=[16, 32], max_sizes=[32, 64]),
        test_cfg=ConfigDict(nms_pre=10, nms=dict(type='nms', iou_threshold=0.5),
                            min_bbox_size=0, score_thr=0.0, max_per_img=5))

    class _Sample:
        metainfo = dict(img_shape=(64, 64), ori_shape=(64, 64), scale_factor=(1.0, 1.0))

    results = head.predict([torch.rand(1, 4, 4, 4), torch.rand(1, 4, 2, 2)], [_Sample()])
    assert len(results[0].bboxes) == 5


# ----------------------------------------------------------------------------- import hygiene
def _python(code, timeout=300, env=None):
    """Runs ``code`` in a fresh interpreter from the repository root."""
    return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


# What mmdet/mmseg do when the installed mmcv is outside their range: an AssertionError on import.
_REJECTING_CODEBASES = '''
import importlib.abc, sys

class _Rejecting(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.split('.')[0] in ('mmdet', 'mmseg'):
            raise AssertionError(f'MMCV==2.1.0 is used but incompatible (simulated by the test '
                                 f'for {fullname})')
        return None

sys.meta_path.insert(0, _Rejecting())
'''


def test_import_does_not_import_mmdet_or_mmseg():
    proc = _python('import sys\nimport mm_efficientconv\n'
                   "print(sorted(m for m in ('mmdet', 'mmseg') if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == '[]'


def test_import_and_layers_work_where_mmdet_and_mmseg_reject_mmcv():
    code = _REJECTING_CODEBASES + '''
try:
    import mmdet  # noqa: F401
    raise SystemExit('the blocker did not reject mmdet')
except AssertionError:
    pass
import torch
from mmcv.cnn import build_conv_layer
from mmengine.registry import HOOKS, MODELS
import mm_efficientconv

for name, extra, groups, kernel in (('BSConvU', {}, 1, 3), ('BSConvS', {}, 1, 3),
                                    ('MixConv', dict(kernel_sizes=(3, 5)), 8, 3),
                                    ('MixGroupedPointwise', {}, 1, 1), ('DOConv', {}, 1, 3)):
    conv = build_conv_layer(dict(type=name, **extra), 8, 8, kernel, padding=kernel // 2,
                            groups=groups)
    assert conv(torch.randn(1, 8, 8, 8)).shape == (1, 8, 8, 8), name
backbone = MODELS.build(dict(type='MixNet', arch='s', out_indices=(1, )))
assert backbone(torch.randn(1, 3, 32, 32))[0].dim() == 4
assert HOOKS.get('ConvDeployHook') is not None
assert mm_efficientconv.switch_to_deploy(backbone) is backbone
print('OK')
'''
    proc = _python(code)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == 'OK'


@pytest.mark.parametrize('trigger', ['import mmdet.models',
                                     'import mmpretrain.models.utils.res_layer_extra_norm'])
def test_mmpretrain_mmdet_integration_still_registers(trigger):
    """mmpretrain registers ResLayerExtraNorm in mmdet's registry when mmdet is there; the
    plugin defers that until mmdet is imported, and it then happens as in a stock process."""
    pytest.importorskip('mmdet')
    code = f'''
import sys
import mm_efficientconv
assert 'mmdet' not in sys.modules
{trigger}
from mmdet.registry import MODELS
import mmdet.models  # noqa: F401
print(MODELS.get('ResLayerExtraNorm').__module__)
'''
    proc = _python(code)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == 'mmpretrain.models.utils.res_layer_extra_norm'


@pytest.mark.parametrize('order', ['plugin_first', 'mmdet_first'])
def test_ssd_head_fix_is_applied_when_mmdet_loads(order):
    """The SSDHead fix waits for mmdet's module (no eager mmdet import) and is applied either
    way round; the patched import keeps mmdet's module introspectable."""
    pytest.importorskip('mmdet')
    first, second = ('import mm_efficientconv', 'import mmdet.models.dense_heads.ssd_head')
    if order == 'mmdet_first':
        first, second = second, first
    code = f'''
import inspect, sys
{first}
if {order!r} == 'plugin_first':
    assert 'mmdet' not in sys.modules
{second}
from mmdet.models.dense_heads import ssd_head
assert 'loss_cls' in vars(ssd_head.SSDHead) and ssd_head.SSDHead.loss_cls is None
assert 'class SSDHead' in inspect.getsource(ssd_head)
assert type(ssd_head.__loader__).__name__ == 'SourceFileLoader', ssd_head.__loader__
print('OK')
'''
    proc = _python(code)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == 'OK'


@pytest.mark.parametrize('cuda', [False, True])
def test_cpu_distributed_patch_only_without_gpu(cuda):
    """The CPU launcher/DDP patch is installed where no GPU is visible and stays off where
    one is (simulated: torch.cuda.is_available patched before the import)."""
    code = f'''
import torch
torch.cuda.is_available = lambda: {cuda}
import mm_efficientconv
from mmengine.dist import utils
from mmengine.model import MMDistributedDataParallel
print(getattr(utils._init_dist_pytorch, '_mm_efficientconv_cpu', False),
      getattr(MMDistributedDataParallel.__init__, '_mm_efficientconv_cpu', False))
'''
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(not cuda)] * 2


def test_compiled_op_built():
    """Shows up as a skip (with the reason) in the test summary where the compiled op of
    DO-Conv's kernel composition is missing: a failed build is never silent."""
    try:
        importlib.import_module('mm_efficientconv._ext')
    except ImportError as exc:
        pytest.skip(f'compiled op mm_efficientconv._ext is not available ({exc}); DO-Conv uses '
                    'the PyTorch kernel composition')


def test_missing_compiled_op_is_in_the_default_summary():
    """pytest's default run (setup.cfg's addopts, no -r given) lists the skip reason."""
    code = '''
import importlib.abc, sys

class _NoExt(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == 'mm_efficientconv._ext':
            raise ImportError('simulated failed build')
        return None

sys.meta_path.insert(0, _NoExt())
import pytest
sys.exit(pytest.main(['tests/test_compat.py::test_compiled_op_built']))
'''
    proc = _python(code)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = proc.stdout[proc.stdout.index('short test summary'):]
    assert 'SKIPPED' in summary and 'mm_efficientconv._ext is not available' in summary
    assert 'simulated failed build' in summary
