# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The dense part of the demo end to end on a smoke-test schedule: digit
scenes, training with tools/train.py, folding with fold_checkpoint.py, and the
folded checkpoints evaluated in the stock configs without the plugin (equal
metrics); plus the demo configs themselves."""
import importlib.util
import json
import subprocess
import sys
import threading
import time

import pytest
from mmengine.config import Config

from mm_efficientconv.datasets.digit_scenes import DIGIT_CLASSES, SEG_CLASSES


def _dense_module(repo_root):
    spec = importlib.util.spec_from_file_location('demo_dense',
                                                  repo_root / 'tools' / 'demo' / 'dense.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(repo_root, name):
    return Config.fromfile(str(repo_root / 'configs' / 'demo' / name),
                           import_custom_modules=False)


def _without(obj, keys):
    if isinstance(obj, dict):
        return {k: _without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, (list, tuple)):
        return [_without(v, keys) for v in obj]
    return obj


@pytest.mark.parametrize('doconv, plain', [
    ('faster-rcnn_r18-doconv_fpn_digit-scenes.py', 'faster-rcnn_r18_fpn_digit-scenes.py'),
    ('deeplabv3_r18-d8-doconv_digit-scenes.py', 'deeplabv3_r18-d8_digit-scenes.py'),
])
def test_plain_twin_is_the_doconv_config_without_the_plugin(repo_root, doconv, plain):
    ours, twin = _config(repo_root, doconv).to_dict(), _config(repo_root, plain).to_dict()
    assert ours['custom_imports']['imports'] == ['mm_efficientconv']
    assert twin['custom_imports'] is None
    assert 'DOConv' in json.dumps(ours['model']) and 'DOConv' not in json.dumps(twin['model'])
    assert _without(ours, {'custom_imports', 'conv_cfg'}) == _without(
        twin, {'custom_imports', 'conv_cfg'})


def test_plain_twins_load_without_the_plugin(repo_root):
    """A fresh interpreter loads the plain twins and builds their models without
    ever importing mm_efficientconv."""
    script = (
        'import sys\n'
        'from mmengine.config import Config\n'
        'from mmengine.registry import MODELS, init_default_scope\n'
        'for name in ["faster-rcnn_r18_fpn_digit-scenes.py", "deeplabv3_r18-d8_digit-scenes.py"]:\n'
        '    cfg = Config.fromfile("configs/demo/" + name)\n'
        '    init_default_scope(cfg.default_scope)\n'
        '    MODELS.build(cfg.model)\n'
        'print(any(m.startswith("mm_efficientconv") for m in sys.modules))\n')
    out = subprocess.run([sys.executable, '-c', script], cwd=repo_root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == 'False'


def test_demo_configs_match_the_scenes(repo_root):
    det = _config(repo_root, 'faster-rcnn_r18-doconv_fpn_digit-scenes.py')
    assert det.model.backbone.depth == 18 and det.model.backbone.conv_cfg == dict(type='DOConv')
    assert det.model.roi_head.bbox_head.num_classes == 10
    assert tuple(det.train_dataloader.dataset.metainfo.classes) == DIGIT_CLASSES
    ssd = _config(repo_root, 'ssdlite_mixnet-s_digit-scenes.py')
    assert ssd.model.backbone.type == 'MixNet' and ssd.model.bbox_head.num_classes == 10
    seg = _config(repo_root, 'deeplabv3_r18-d8-doconv_digit-scenes.py')
    assert tuple(seg.train_dataloader.dataset.metainfo.classes) == SEG_CLASSES
    assert seg.model.decode_head.num_classes == seg.model.auxiliary_head.num_classes == 11
    for cfg in (det, ssd, seg):  # no flips: a mirrored digit is not a digit
        types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
        assert 'RandomFlip' not in types


def test_check_rows(repo_root):
    dense = _dense_module(repo_root)
    good = dict(model='faster-rcnn_r18-doconv', metric='bbox_mAP_50', value=0.9,
                value_folded_stock=0.9, value_folded=None, imported_mm_efficientconv=False)
    assert dense.check_rows([good]) == []
    assert 'below its floor' in dense.check_rows([dict(good, value=0.7,
                                                       value_folded_stock=0.7)])[0]
    assert dense.check_rows([dict(good, value=0.7, value_folded_stock=0.7)], floors=False) == []
    assert '!= value' in dense.check_rows([dict(good, value_folded_stock=0.899)])[0]
    assert 'imported' in dense.check_rows([dict(good, imported_mm_efficientconv=True)])[0]
    mixnet = dict(model='ssdlite_mixnet-s', metric='bbox_mAP_50', value=0.65,
                  value_folded_stock=None, value_folded=0.64)
    assert '!= value' in dense.check_rows([mixnet])[0]


def test_stock_evaluation_refuses_a_plugin_config(repo_root, tmp_path):
    ckpt = tmp_path / 'x.pth'
    ckpt.write_bytes(b'')
    out = subprocess.run(
        [sys.executable, 'tools/demo/evaluate_checkpoint.py',
         'configs/demo/faster-rcnn_r18-doconv_fpn_digit-scenes.py', str(ckpt)],
        cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert 'imported mm_efficientconv' in out.stderr


@pytest.mark.slow
def test_dense_demo_smoke_run(repo_root, tmp_path):
    """Two iterations per model; the folded checkpoints' metrics must equal the
    trained models' (DO-Conv: in the plain twin without the plugin; MixNet: in
    deploy form)."""
    models = ['faster-rcnn_r18-doconv', 'ssdlite_mixnet-s', 'deeplabv3_r18-doconv']
    out = subprocess.run(
        [sys.executable, 'tools/demo/run_demo.py', '--work-dir', str(tmp_path), '--tasks', 'det',
         'seg', '--dense-models'] + models + ['--dense-iters', '2', '--num-scenes', '16', '8',
                                              '--no-dense-floors', '--threads', '1'],
        cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    rows = json.loads((tmp_path / 'summary.json').read_text())
    assert [r['model'] for r in rows] == models
    det, ssd, seg = rows
    for row in rows:
        assert 0.0 <= row['value'] <= 1.0 and row['train_seconds'] > 0
        assert row['metric'] == {'det': 'bbox_mAP_50', 'seg': 'mIoU'}[row['task']]
    for row in (det, seg):
        assert row['value_folded_stock'] == row['value'] and row['value_folded'] is None
        assert row['imported_mm_efficientconv'] is False
        assert row['folded_layers'] > 0 and row['params_folded'] < row['params']
        assert (tmp_path / row['model'] / f"{row['model']}_deploy.pth").is_file()
    assert det['task'] == ssd['task'] == 'det' and seg['task'] == 'seg'
    assert 0.0 <= det['bbox_mAP'] <= det['value']
    assert det['bbox_mAP_folded_stock'] == det['bbox_mAP']
    assert ssd['value_folded'] == ssd['value'] and ssd['value_folded_stock'] is None
    assert ssd['mixconv_folded'] > 0
    assert 'Epoch(train) [1][2/2]' in (tmp_path / det['model'] / 'train_output.log').read_text()
    assert seg['checkpoint'].endswith('iter_2.pth')  # at batch 4 the log's first line is iter 10
    assert 'digit scenes written' in out.stdout


def test_run_models_starts_in_the_planned_order_and_keeps_the_order(repo_root, capsys):
    """Two pipelines at once, the segmentation models first; rows in the
    requested order whatever the finishing order. Nothing is trained."""
    dense = _dense_module(repo_root)
    names = list(dense.MODELS)  # detection first
    seg = {'deeplabv3_r18-doconv', 'deeplabv3_r18-plain'}
    lock, running, started, peak = threading.Lock(), set(), [], [0]

    def fake_run(name, work_dir, data_root, seed, env, iters, log_lines=False, stop=None):
        assert log_lines and not stop.is_set()
        with lock:
            started.append(name)
            running.add(name)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.3 if name in seg else 0.05)
        with lock:
            running.remove(name)
        return dict(model=name, metric='mIoU', value=0.5, train_seconds=1.0)

    rows = dense.run_models(names, 'w', 'd', 0, {}, jobs=2, run=fake_run)
    assert [r['model'] for r in rows] == names
    assert set(started[:2]) == seg and started == dense.start_order(names, 2)
    assert peak[0] == 2
    finished = [line.split(']')[0][1:] for line in capsys.readouterr().out.splitlines()]
    assert set(finished[:2]) == seg and sorted(finished) == sorted(names)


def test_start_order_ends_sooner_than_longest_first(repo_root):
    """Two lanes, five pipelines of the demo's shape: longest-first leaves the
    shortest one alone at the end (385 + 190 + 145 = 720 s); the planned order
    ends at 680 s (385 + 230 | 345 + 190 + 145), the best any order can do."""
    dense = _dense_module(repo_root)
    seconds = dict(seg_a=385, seg_b=345, det_c=230, det_d=190, det_e=145)
    names = list(seconds)
    assert dense.planned_finish(names, 2, seconds) == 720
    order = dense.start_order(names, 2, seconds)
    assert sorted(order) == sorted(names) and order[:2] == ['seg_a', 'seg_b']
    assert dense.planned_finish(order, 2, seconds) == 680
    assert dense.planned_finish(names, 1, seconds) == sum(seconds.values())
    assert dense.start_order(['seg_a'], 2, seconds) == ['seg_a']


def test_run_models_one_at_a_time(repo_root):
    dense = _dense_module(repo_root)
    calls = []

    def fake_run(name, *args, **kwargs):
        calls.append((name, kwargs))
        return dict(model=name, metric='mIoU', value=None, train_seconds=1.0)

    names = ['faster-rcnn_r18-plain', 'deeplabv3_r18-plain']
    rows = dense.run_models(names, 'w', 'd', 0, {}, jobs=1, run=fake_run)
    assert [r['model'] for r in rows] == names
    assert calls == [(name, {}) for name in names]  # as given, with the progress bar


@pytest.mark.parametrize('stopped_ends_first', [False, True])
def test_run_models_stops_the_others_on_a_failure(repo_root, stopped_ends_first):
    """The failure is raised (also when the pipeline it stopped ends first) and
    no waiting model starts."""
    dense = _dense_module(repo_root)
    seen, ended = [], threading.Event()

    def fake_run(name, *args, log_lines=False, stop=None):
        seen.append(name)
        if name == 'deeplabv3_r18-plain':
            if stopped_ends_first:
                stop.set()
                assert ended.wait(5)
            raise RuntimeError('training failed')
        assert stop.wait(5), 'the other pipeline was not told to stop'
        ended.set()
        raise dense.Stopped(name)

    with pytest.raises(RuntimeError, match='training failed'):
        dense.run_models(list(dense.MODELS), 'w', 'd', 0, {}, jobs=2, run=fake_run)
    assert sorted(seen) == ['deeplabv3_r18-doconv', 'deeplabv3_r18-plain']  # no det model started


def test_train_progress_lines(repo_root, capsys):
    dense = _dense_module(repo_root)
    progress = dense._TrainProgress(None, name='m')
    for i in range(10, 101, 10):
        progress.feed(f'Iter(train) [{i:4d}/100]  lr: 1e-3')
    progress = dense._TrainProgress(2, name='d')
    progress.feed('Epoch(train) [2][ 50/100]  lr: 1e-3')
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines] == [f'{p}%' for p in range(10, 101, 10)] + ['75%']
    assert lines[0].startswith('[m] training  10% (10/100 iterations, ')
    assert lines[-1].startswith('[d] training  75% (150/200 iterations, ')
