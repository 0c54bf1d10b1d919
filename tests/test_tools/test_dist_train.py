# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""A 2-process distributed CPU run (gloo, no GPU visible) started by tools/dist_train.sh itself,
with OrthoRegHook: both ranks must see the same loss_ortho at every iteration
(the weights stay in sync) while their classification losses differ (each rank
trains on its own shard). Then tools/dist_test.sh --deploy on its checkpoint."""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'dist_train.sh'

# Imported by the config (custom_imports) in every rank: records what each rank logs.
PROBE_MODULE = '''
import os.path as osp

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RecordRankLosses(Hook):

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        values = {k: float(v) for k, v in outputs.items()}
        with open(osp.join(self.out_dir, f'rank{runner.rank}.txt'), 'a') as f:
            f.write(f"{runner.world_size} {runner.iter} {values['loss_ortho']!r} "
                    f"{values['loss_cls']!r} {values['loss']!r}\\n")
'''

CONFIG = '''
default_scope = 'mmpretrain'
custom_imports = dict(imports=['mm_efficientconv', 'dist_probe_hook'],
                      allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    data_preprocessor=dict(type='ClsDataPreprocessor', num_classes=3, mean=[127.5] * 3,
                           std=[127.5] * 3),
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=8, base_channels=8,
                  conv_cfg=dict(type='BSConvS')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=3, in_channels=64))
train_dataloader = dict(
    batch_size=2, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root={data!r},
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
train_cfg = dict(by_epoch=False, max_iters=3)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.2, momentum=0.9))
default_hooks = dict(logger=dict(type='LoggerHook', interval=1),
                     checkpoint=dict(type='CheckpointHook', interval=100, by_epoch=False))
custom_hooks = [dict(type='OrthoRegHook', alpha=0.01),
                dict(type='RecordRankLosses', out_dir={out!r})]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'INFO'
test_dataloader = dict(
    batch_size=4, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root={data!r},
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
test_evaluator = dict(type='Accuracy', topk=(1, ))
test_cfg = dict()
'''


def write_pngs(root, num_classes=3, per_class=4, size=16):
    rng = np.random.default_rng(0)
    for c in range(num_classes):
        folder = root / f'class{c}'
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            img[..., c] = 255 - 40 * i
            Image.fromarray(img).save(folder / f'{i}.png')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launch(script, tmp_path, *args):
    env = dict(os.environ)
    # CPU processes on gloo, also on a GPU host (one GPU cannot hold two ranks' NCCL groups)
    env.update(PYTHON=sys.executable, PORT=str(free_port()), MASTER_ADDR='127.0.0.1',
               PYTHONPATH=os.pathsep.join([str(tmp_path), env.get('PYTHONPATH', '')]),
               OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run(['bash', str(script), *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=str(tmp_path), timeout=240)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory):
    if shutil.which('bash') is None:
        pytest.skip('needs bash')
    tmp_path = tmp_path_factory.mktemp('dist')
    data, out, work = tmp_path / 'data', tmp_path / 'ranks', tmp_path / 'work'
    write_pngs(data)
    out.mkdir()
    (tmp_path / 'dist_probe_hook.py').write_text(PROBE_MODULE)
    config = tmp_path / 'tiny_bsconvs_cfg.py'
    config.write_text(CONFIG.format(data=str(data), out=str(out)))
    launch(SCRIPT, tmp_path, config, 2, '--work-dir', work)
    return dict(tmp=tmp_path, config=config, out=out, work=work)


def test_two_process_gloo_run_keeps_loss_ortho_in_sync(dist_run):
    out, work = dist_run['out'], dist_run['work']
    rows = {}
    for rank in (0, 1):
        lines = (out / f'rank{rank}.txt').read_text().split('\n')
        rows[rank] = [line.split() for line in lines if line]
        assert [r[:2] for r in rows[rank]] == [['2', '0'], ['2', '1'], ['2', '2']]
    ortho = {rank: [float(r[2]) for r in rows[rank]] for rank in rows}
    cls = {rank: [float(r[3]) for r in rows[rank]] for rank in rows}
    assert all(v > 0 for v in ortho[0])
    assert ortho[0] == pytest.approx(ortho[1], rel=1e-6, abs=0)
    assert ortho[0][0] != pytest.approx(ortho[0][-1], rel=1e-6)  # the weights moved
    assert any(a != pytest.approx(b, rel=1e-6) for a, b in zip(cls[0], cls[1]))
    for rank in rows:
        for r in rows[rank]:
            assert float(r[4]) == pytest.approx(float(r[2]) + float(r[3]), rel=1e-5)
    log = next(work.rglob('*.log')).read_text()
    assert 'loss_ortho:' in log and 'loss_cls:' in log
    assert (work / 'iter_3.pth').is_file()


def test_dist_test_deploy(dist_run):
    tmp_path, work = dist_run['tmp'], dist_run['tmp'] / 'test_work'
    proc = launch(SCRIPT.with_name('dist_test.sh'), tmp_path, dist_run['config'],
                  dist_run['work'] / 'iter_3.pth', 2, '--deploy', '--work-dir', work)
    log = next(work.rglob('*.log')).read_text()
    assert 'ConvDeployHook: switched' in log
    assert 'accuracy/top1' in log, proc.stdout[-3000:]
