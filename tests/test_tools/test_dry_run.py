# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""tools/misc/dry_run.py: every config trains for 2 iterations on its mini
dataset and validates with its real metric; one 2-process (gloo) run per
codebase through torchrun; unsupported dataset types exit with status 2.

Each run is a subprocess (a fresh interpreter, like a user's command line); the
config surgery of the library (mm_efficientconv.testing.dry_run_config) is
checked in-process.
"""
import glob
import json
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
from mmengine.config import Config

from mm_efficientconv.testing import dry_run as dry_run_lib
from mm_efficientconv.testing import dry_run_config as surgery

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DRY_RUN = osp.join(ROOT, 'tools', 'misc', 'dry_run.py')
# complete configs only: configs/_base_/ holds fragments (datasets, schedules) to inherit
# (configs/demo/ trains on the digit scenes it writes itself: tests/test_tools/test_demo_dense.py)
CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True)
    if osp.relpath(p, osp.join(ROOT, 'configs')).split(os.sep)[0] not in ('_base_', 'demo'))
IDS = [osp.relpath(p, osp.join(ROOT, 'configs')) for p in CONFIGS]
EXPECTED_KEYS = {
    'Accuracy': 'accuracy/top1',
    'CocoMetric': 'coco/bbox_mAP',
    'IoUMetric': 'mIoU',
}
TIMEOUT = 600


def _env(threads=None, cpu_only=False):
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
    env['PYTHONWARNINGS'] = 'ignore'
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    if cpu_only:  # multi-process runs stay on CPU/gloo, also on a single-GPU host
        env['CUDA_VISIBLE_DEVICES'] = ''
    return env


def _run(cmd, env=None, timeout=TIMEOUT):
    proc = subprocess.run(cmd, cwd=ROOT, env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)
    return proc, proc.stdout + proc.stderr


def _expected_key(cfg):
    evaluator = cfg.val_evaluator
    evaluator = evaluator[0] if isinstance(evaluator, (list, tuple)) else evaluator
    return EXPECTED_KEYS[evaluator['type']]


def _uses_ortho_reg(cfg):
    return any(h.get('type') == 'OrthoRegHook' for h in cfg.get('custom_hooks') or [])


def _check_result(cfg_path, work_dir, proc, output, world_size=1, iters=2, keep_data=False):
    assert proc.returncode == 0, output[-6000:]
    with open(osp.join(work_dir, 'dry_run_result.json')) as f:
        result = json.load(f)
    cfg = Config.fromfile(cfg_path)
    key = _expected_key(cfg)
    assert result['metric_key'].endswith(key), result
    assert result['metric'] is not None and result['metric_key'] in result['metrics']
    assert f'dry-run metric: {result["metric_key"]} = ' in output
    assert result['iters'] == iters and result['world_size'] == world_size
    # the training iterations really ran (losses were logged every iteration)
    assert 'loss' in result['loss_keys']
    assert f'Iter(train) [{iters}/{iters}]' in output
    if _uses_ortho_reg(cfg):
        assert 'loss_ortho' in result['loss_keys']
        assert 'loss_ortho:' in output
    # the mini dataset is removed afterwards (unless --keep-data)
    assert osp.exists(osp.join(work_dir, 'dry_run_data')) == keep_data
    return result


@pytest.mark.slow
@pytest.mark.parametrize('cfg_path', CONFIGS, ids=IDS)
def test_dry_run(cfg_path, tmp_path):
    work_dir = str(tmp_path / 'work')
    proc, output = _run(
        [sys.executable, DRY_RUN, cfg_path, '--work-dir', work_dir, '--iters', '2'])
    _check_result(cfg_path, work_dir, proc, output)


@pytest.mark.slow
def test_dry_run_options(tmp_path):
    """--iters, --keep-data, --save-checkpoint and --cfg-options."""
    cfg_path = osp.join(ROOT, 'configs', 'bsconv', 'resnet20_1xb128_cifar10.py')
    work_dir = str(tmp_path / 'work')
    proc, output = _run([
        sys.executable, DRY_RUN, cfg_path, '--work-dir', work_dir, '--iters', '3',
        '--keep-data', '--save-checkpoint', '--cfg-options', 'optim_wrapper.optimizer.lr=0.025'
    ])
    _check_result(cfg_path, work_dir, proc, output, iters=3, keep_data=True)
    data = osp.join(work_dir, 'dry_run_data', 'cifar10', 'cifar-10-batches-py')
    assert sorted(os.listdir(data)) == sorted(
        [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch', 'batches.meta'])
    assert osp.exists(osp.join(work_dir, 'iter_3.pth'))
    assert 'lr: 2.5000e-02' in output


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


DIST_CONFIGS = {
    # BSConv-S through DDP: the regulariser must reach the loss through the wrapper
    'mmpretrain': 'bsconv/mobilenet-v3-large-bsconvs_8xb32_stanford-dogs.py',
    'mmdet': 'doconv/faster-rcnn_r50-doconv_fpn_1x_coco.py',
    'mmseg': 'doconv/deeplabv3_r50-d8-doconv_4xb4-20k_voc12aug-512x512.py',
}


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize('codebase', sorted(DIST_CONFIGS))
def test_dist_dry_run(codebase, tmp_path):
    """2 processes on the CPU (gloo), launched like tools/dist_train.sh does
    (torch.distributed.run + --launcher pytorch)."""
    cfg_path = osp.join(ROOT, 'configs', DIST_CONFIGS[codebase])
    work_dir = str(tmp_path / 'work')
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--node_rank=0',
        '--master_addr=127.0.0.1', '--nproc_per_node=2', f'--master_port={_free_port()}',
        DRY_RUN, cfg_path, '--work-dir', work_dir, '--iters', '2', '--launcher', 'pytorch'
    ]
    proc, output = _run(cmd, env=_env(threads=1, cpu_only=True))
    result = _check_result(cfg_path, work_dir, proc, output, world_size=2)
    assert Config.fromfile(cfg_path).default_scope == codebase
    assert result['world_size'] == 2


UNSUPPORTED_CFG = """
_base_ = [
    'mmpretrain::_base_/datasets/cub_bs8_448.py',
    'mmpretrain::_base_/default_runtime.py',
]
model = dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet', depth=18),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=200, in_channels=512))
"""


def test_unsupported_dataset_type_exits_2(tmp_path):
    cfg_file = tmp_path / 'cub_cfg.py'
    cfg_file.write_text(UNSUPPORTED_CFG)
    proc, output = _run([sys.executable, DRY_RUN, str(cfg_file), '--work-dir',
                         str(tmp_path / 'work')], timeout=300)
    assert proc.returncode == 2, output[-3000:]
    assert 'no mini-dataset writer for train_dataloader: CUB' in proc.stderr
    assert 'Supported dataset types: ' in proc.stderr
    for name in ('CIFAR10', 'CIFAR100', 'CityscapesDataset', 'CocoDataset', 'CustomDataset',
                 'ImageNet', 'PascalVOCDataset'):
        assert name in proc.stderr
    assert not osp.exists(tmp_path / 'work' / 'dry_run_data')


# ----------------------------------------------------------------------------- the library
def test_shrink_keeps_transform_types_and_ratios():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'doconv',
                 'deeplabv3_r50-d8-doconv_4xb2-80k_cityscapes-512x1024.py'))
    types_before = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    factor = surgery.shrink_factor(cfg, 64)
    assert factor == pytest.approx(64 / 1024)
    surgery.shrink_sizes(cfg, factor)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == types_before
    sizes = {t['type']: t for t in pipeline}
    assert tuple(sizes['RandomResize']['scale']) == (128, 64)
    assert sizes['RandomResize']['ratio_range'] == (0.5, 2.0)
    assert tuple(sizes['RandomCrop']['crop_size']) == (32, 64)
    assert tuple(cfg.model.data_preprocessor['size']) == (32, 64)
    test_resize = cfg.val_dataloader.dataset.pipeline[1]
    assert test_resize['type'] == 'Resize' and tuple(test_resize['scale']) == (128, 64)


def test_detect_formats_through_wrappers():
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'doconv',
                 'deeplabv3_r50-d8-doconv_4xb4-20k_voc12aug-512x512.py'))
    formats = surgery.detect_formats(cfg)
    assert [f for f, _ in formats['train_dataloader']] == ['voc12aug', 'voc12aug']
    cfg = Config.fromfile(
        osp.join(ROOT, 'configs', 'mixnet', 'ssdlite_mixnet-s_8xb24-600e_coco.py'))
    assert cfg.train_dataloader.dataset.type == 'RepeatDataset'
    assert [f for f, _ in surgery.detect_formats(cfg)['train_dataloader']] == ['coco']
    assert surgery.task_of(surgery.detect_formats(cfg)) == 'det'


SYNC_BN_AMP_CFG = """
model = dict(type='ImageClassifier', backbone=dict(type='ResNet', depth=18,
             norm_cfg=dict(type='SyncBN')))
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic',
                     optimizer=dict(type='SGD', lr=0.1))
env_cfg = dict(dist_cfg=dict(backend='nccl'))
train_dataloader = dict(batch_size=32, num_workers=4, dataset=dict(type='CIFAR10'))
"""


@pytest.mark.parametrize('cuda', [False, True])
@pytest.mark.parametrize('launcher', ['none', 'pytorch'])
def test_runtime_follows_the_device(tmp_path, monkeypatch, cuda, launcher):
    """Without a GPU: BN, plain OptimWrapper, gloo; with one (simulated) the config keeps its
    AMP and backend, and SyncBN in distributed runs. DDP's device_ids are never set here
    (mm_efficientconv.compat handles CPU modules)."""
    cfg_file = tmp_path / 'cfg.py'
    cfg_file.write_text(SYNC_BN_AMP_CFG)
    cfg = Config.fromfile(str(cfg_file))
    monkeypatch.setattr('torch.cuda.is_available', lambda: cuda)
    surgery.adapt_runtime(cfg, str(tmp_path / 'work'), iters=3, launcher=launcher)
    assert cfg.model.backbone.norm_cfg.type == ('SyncBN' if cuda and launcher != 'none' else 'BN')
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if cuda else 'OptimWrapper')
    assert ('loss_scale' in cfg.optim_wrapper) == cuda
    assert cfg.env_cfg.dist_cfg.backend == ('nccl' if cuda else 'gloo')
    assert 'model_wrapper_cfg' not in cfg
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=3, val_interval=3)
    assert cfg.train_dataloader.batch_size == 2 and cfg.train_dataloader.num_workers == 0
    assert cfg.launcher == launcher and cfg.work_dir == str(tmp_path / 'work')


@pytest.mark.parametrize('kwargs, match', [(dict(iters=0), 'iters'), (dict(max_size=8), 'max_size'),
                                           (dict(launcher='slurm'), 'launcher')])
def test_dry_run_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dry_run_lib.dry_run(osp.join(ROOT, 'configs', 'bsconv', 'resnet20_1xb128_cifar10.py'),
                            str(tmp_path / 'work'), **kwargs)
    assert not (tmp_path / 'work').exists()


def test_dry_run_unsupported_dataset_raises_before_writing(tmp_path):
    cfg_file = tmp_path / 'cub_cfg.py'
    cfg_file.write_text(UNSUPPORTED_CFG)
    with pytest.raises(dry_run_lib.UnsupportedDatasetError, match='CUB'):
        dry_run_lib.dry_run(str(cfg_file), str(tmp_path / 'work'))
    assert not (tmp_path / 'work').exists()
