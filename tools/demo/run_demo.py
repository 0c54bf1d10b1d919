# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The main job: every conv family trained on real data, folded, evaluated.

Classification (``--tasks cls``): on scikit-learn's handwritten digits
(1,797 real images that ship with the package, upsampled to 32x32), through
the MMEngine Runner and mmpretrain's ImageClassifier, this trains

* a plain baseline and its BSConv-S (with the orthonormal regulariser) and
  DO-Conv twins (CIFAR ResNet, all 3x3 convs replaced through ``conv_cfg``),
* a plain MobileNetV1 and its BSConv-U and MixConv (3, 5, 7) twins,

evaluates top-1 on a stratified held-out split, folds each model to deploy
form (``mm_efficientconv.switch_to_deploy``) and evaluates again (must be
identical), exports the folded model to ONNX and compares onnxruntime with
PyTorch.

Detection and segmentation (``--tasks det seg``, see ``dense.py``): scenes
composed from the same real digits (split per digit image: no held-out scene
holds a digit image seen in training), written as COCO and VOC-style data;
Faster R-CNN R18 (DO-Conv and plain), SSDLite MixNet-S and DeepLabV3 R18
(DO-Conv and plain) of ``configs/demo`` are trained with ``tools/train.py``,
folded with ``tools/deploy/fold_checkpoint.py`` and the folded checkpoints
evaluated in the stock configs without the plugin, ``--jobs`` models at a time
(default 2: two pipelines, each subprocess on one thread, in the order planned to
end soonest; the classification part then trains beside them, on one thread).

It prints one table and writes ``<work-dir>/summary.json``; it exits
non-zero when a folded model evaluates differently or a model misses its
floor.

Example:
    python tools/demo/run_demo.py --work-dir work_dirs/demo
    python tools/demo/run_demo.py --tasks det seg --seed 1
    python tools/demo/run_demo.py --tasks det seg --jobs 1  # one model at a time
"""
import argparse
import copy
import json
import os
import os.path as osp
import sys
import tempfile
import threading
import time

import numpy as np
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.runner import Runner

import mm_efficientconv
from mm_efficientconv import switch_to_deploy
from mm_efficientconv.deploy import export_onnx

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import dense  # noqa: E402  (tools/demo/dense.py)

TASKS = ('cls', 'det', 'seg')

NUM_CLASSES = 10

# name -> (backbone cfg, feature channels, extra hooks, epochs)
_RESNET8 = dict(type='CifarResNet', depth=8)
_MOBILENET = dict(type='MobileNetV1', widen_factor=0.25, cifar=True)
MODELS = {
    'plain_resnet8': (_RESNET8, 64, [], 12),
    'bsconvs_resnet8': (dict(_RESNET8, conv_cfg=dict(type='BSConvS', p=0.25)), 64,
                        # 16 epochs: from its orthonormal start this 9.9k-parameter net needs more
                        # than the others' 12 (12 epochs: 88.86 top-1; 16: 95.54; 20: 97.21)
                        [dict(type='OrthoRegHook', alpha=0.01)], 16),
    'doconv_resnet8': (dict(_RESNET8, conv_cfg=dict(type='DOConv')), 64, [], 12),
    # 4 epochs for the MobileNets (6: 98.33 / 98.89 / 98.89 top-1; 4: 98.33 / 97.77 / 98.61, one
    # thread): with BSConv-S at 16, ~70 s less CPU time in the whole demo; the other ResNet-8s need
    # their 12 (8 epochs: plain 88.58, DO-Conv 89.97, below the 90 floor)
    'plain_mobilenetv1_w0.25': (_MOBILENET, 256, [], 4),
    'bsconvu_mobilenetv1_w0.25': (dict(_MOBILENET, block_type='bsconvu'), 256, [], 4),
    'mixconv357_mobilenetv1_w0.25': (dict(_MOBILENET, conv_cfg=dict(type='MixConv',
                                                                  kernel_sizes=(3, 5, 7))), 256, [], 4),
}


class ProgressHook(Hook):
    """A one-line progress bar per model (mmengine's ProgressBar), or, while
    the dense pipelines print beside it (``lines=True``), a ``[name]`` line at
    every quarter."""

    priority = 'VERY_LOW'

    def __init__(self, name: str, lines: bool = False):
        self.name = name
        self.lines = lines
        self.bar = None
        self.total = self.done = 0

    def before_train(self, runner):
        from mmengine.utils import ProgressBar
        self.total = runner.max_epochs * len(runner.train_dataloader)
        dense.say(f'\n[{self.name}] training {runner.max_epochs} epochs ({self.total} iterations)')
        self.bar = None if self.lines else ProgressBar(self.total)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.done += 1
        if self.bar is not None:
            self.bar.update()
        elif self.done * 4 // self.total > (self.done - 1) * 4 // self.total:
            dense.say(dense.progress_line(self.name, self.done, self.total))

    def after_train(self, runner):
        if self.bar is not None:
            sys.stdout.write('\n')


def build_cfg(name: str, work_dir: str, epochs: int, seed: int, batch_size: int) -> dict:
    backbone, channels, hooks, default_epochs = MODELS[name]
    epochs = epochs or default_epochs
    dataset = dict(type='SklearnDigitsDataset', image_size=32, seed=seed)
    return dict(
        default_scope='mmpretrain',
        work_dir=osp.join(work_dir, name),
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(num_classes=NUM_CLASSES, mean=[0.0] * 3, std=[255.0] * 3),
            backbone=copy.deepcopy(backbone),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=channels,
                      loss=dict(type='CrossEntropyLoss'))),
        train_dataloader=dict(
            batch_size=batch_size, num_workers=0,
            dataset=dict(dataset, split='train'),
            sampler=dict(type='DefaultSampler', shuffle=True)),
        val_dataloader=dict(
            batch_size=256, num_workers=0,
            dataset=dict(dataset, split='test'),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        val_evaluator=dict(type='Accuracy', topk=(1, )),
        train_cfg=dict(by_epoch=True, max_epochs=epochs, val_interval=epochs),
        val_cfg=dict(),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4,
                                          nesterov=True)),
        param_scheduler=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=epochs,
                 convert_to_iter_based=True),
        ],
        custom_hooks=copy.deepcopy(hooks),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=10_000),
            checkpoint=dict(type='CheckpointHook', interval=-1, save_last=True),
        ),
        log_level='WARNING',
        randomness=dict(seed=seed, deterministic=False),
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
    )


def run_one(name: str, args, lines: bool = False) -> dict:
    cfg = build_cfg(name, args.work_dir, args.epochs, args.seed, args.batch_size)
    runner = Runner.from_cfg(_as_config(cfg))
    runner.register_hook(ProgressHook(name, lines), priority='VERY_LOW')
    start = time.perf_counter()
    runner.train()
    train_seconds = time.perf_counter() - start
    scalars = runner.message_hub.log_scalars
    loss_ortho = float(scalars['train/loss_ortho'].current()) if 'train/loss_ortho' in scalars else None
    top1 = float(runner.val()['accuracy/top1'])

    model = runner.model
    params = sum(p.numel() for p in model.parameters())
    switch_to_deploy(model)
    folded_params = sum(p.numel() for p in model.parameters())
    top1_folded = float(runner.val()['accuracy/top1'])

    # probe ONNX with real held-out images, preprocessed as in evaluation
    batch = next(iter(runner.val_dataloader))
    probe = model.data_preprocessor(batch, training=False)['inputs'][:16]
    onnx_path = osp.join(args.work_dir, name, f'{name}.onnx')
    report = export_onnx(model, onnx_path, input_shape=probe.shape, fold=False, force=True,
                         probe=probe)
    return dict(model=name, task='cls', top1=round(top1, 2), top1_folded=round(top1_folded, 2),
                onnx_max_abs_diff=float(report['max_abs_diff']), params=int(params),
                params_folded=int(folded_params), train_seconds=round(train_seconds, 1),
                final_loss_ortho=loss_ortho)


def _as_config(cfg: dict):
    from mmengine.config import Config
    return Config(cfg)


def _table_row(r: dict) -> dict:
    if r['task'] == 'cls':
        return dict(model=r['model'], task='cls', metric='top1 %', value=r['top1'],
                    folded=r['top1_folded'], folded_stock=None,
                    other=f"onnx diff {_fmt(r['onnx_max_abs_diff'])}", params=r['params'],
                    train_s=r['train_seconds'])
    other = f"mAP {_fmt(r['bbox_mAP'])}" if r.get('bbox_mAP') is not None else ''
    return dict(model=r['model'], task=r['task'], metric=r['metric'], value=r['value'],
                folded=r.get('value_folded'), folded_stock=r.get('value_folded_stock'),
                other=other, params=r.get('params'), train_s=r['train_seconds'])


def print_table(rows):
    """One table for every task (``folded_stock``: evaluated without the plugin)."""
    table = [_table_row(r) for r in rows]
    header = list(table[0])
    widths = [max(len(h), *(len(_fmt(r[h])) for r in table)) for h in header]
    line = ' | '.join(h.ljust(w) for h, w in zip(header, widths))
    print('\n' + line + '\n' + '-+-'.join('-' * w for w in widths))
    for r in table:
        print(' | '.join(_fmt(r[h]).ljust(w) for h, w in zip(header, widths)))


def _fmt(value):
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.2e}' if abs(value) < 1e-2 and value else f'{value:g}'
    return str(value)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--tasks', nargs='+', default=list(TASKS), choices=TASKS,
                        help='parts to run: classification, detection, segmentation '
                        '(default: all)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='classification: epochs for every model (default: 12 for the '
                        'ResNets, 16 for the BSConv-S ResNet, 4 for the MobileNets)')
    parser.add_argument('--batch-size', type=int, default=32,
                        help='classification batch size (default: 32)')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of every training run (the digit scenes do not change)')
    parser.add_argument('--min-top1', type=float, default=90.0,
                        help='exit non-zero if a classifier ends below this top-1 (default: 90)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads, also of the dense subprocesses (default: torch\'s '
                        'own choice; 1 per dense subprocess when --jobs > 1)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='detection/segmentation models trained, folded and evaluated at '
                        'once, in the order planned to end soonest (default: 2; 1: one after '
                        'the other)')
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS),
                        help='subset of classification models to run (default: all)')
    parser.add_argument('--dense-models', nargs='+', default=None, choices=list(dense.MODELS),
                        help='subset of detection/segmentation models (default: all of the '
                        'selected tasks)')
    parser.add_argument('--dense-iters', type=int, default=None,
                        help='smoke test: train each dense model for this many iterations '
                        'instead of its schedule')
    parser.add_argument('--num-scenes', type=int, nargs=2, default=None, metavar=('TRAIN', 'VAL'),
                        help='number of training and held-out digit scenes (default: the '
                        'writer\'s, 1000 and 200)')
    parser.add_argument('--no-dense-floors', action='store_true',
                        help='do not fail when a dense model misses its floor (smoke tests)')
    args = parser.parse_args(argv)
    if args.dense_models is None:
        args.dense_models = [n for n, m in dense.MODELS.items() if m['task'] in args.tasks]
    elif any(dense.MODELS[n]['task'] not in args.tasks for n in args.dense_models):
        parser.error('--dense-models lists a model of a task not in --tasks')
    if args.jobs < 1:
        parser.error(f'--jobs must be >= 1 (1: one model at a time), got {args.jobs}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be >= 1, got {args.threads}')
    if args.dense_iters is not None and args.dense_iters < 1:
        parser.error(f'--dense-iters must be >= 1, got {args.dense_iters}')
    return args


def run_dense(args) -> list:
    """Writes the digit scenes, then trains, folds and evaluates the dense models."""
    from mm_efficientconv.datasets.digit_scenes import write_digit_scenes
    kwargs = dict(zip(('num_train', 'num_val'), args.num_scenes)) if args.num_scenes else {}
    start = time.perf_counter()
    info = write_digit_scenes(osp.join(args.work_dir, 'digit_scenes'), seed=dense.SCENES_SEED,
                              overwrite=True, **kwargs)
    dense.say(f"\ndigit scenes {'written' if info['written'] else 'reused'}: {info['data_root']} "
              f'({time.perf_counter() - start:.1f} s)')
    env = dict(os.environ)
    threads = args.threads or (1 if args.jobs > 1 else None)  # concurrent: one core each
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if args.jobs > 1:
        print(f'{min(args.jobs, len(args.dense_models))} pipelines at once, '
              f'{threads} thread(s) per subprocess', flush=True)
    return dense.run_models(args.dense_models, osp.abspath(args.work_dir), info['data_root'],
                            args.seed, env, args.dense_iters, jobs=args.jobs)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(args.work_dir, exist_ok=True)
    MMLogger.get_instance('mmengine', log_level='WARNING')
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    rows = []
    total = time.perf_counter()
    # With --jobs > 1 the dense pipelines start first, in a thread of their own, and the
    # classification part trains here beside them on one thread (--threads to change), so the
    # cores stay busy to the end; its train_seconds are then those of a shared machine.
    beside = 'cls' in args.tasks and bool(args.dense_models) and args.jobs > 1
    dense_result = {}
    if beside:
        torch.set_num_threads(args.threads or 1)

        def dense_part():
            try:
                dense_result['rows'] = run_dense(args)
            except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
                dense_result['error'] = error

        dense_thread = threading.Thread(target=dense_part, name='dense', daemon=True)
        dense_thread.start()
    if 'cls' in args.tasks:
        for name in args.models:
            rows.append(run_one(name, args, lines=beside))
            dense.say(f'[{name}] top1 {rows[-1]["top1"]:.2f}  folded '
                      f'{rows[-1]["top1_folded"]:.2f}  onnx diff '
                      f'{rows[-1]["onnx_max_abs_diff"]:.2e}')
    if beside:
        dense_thread.join()
        if 'error' in dense_result:
            raise dense_result['error']
        dense_rows = dense_result['rows']
    else:
        dense_rows = run_dense(args) if args.dense_models else []
    rows += dense_rows
    print_table(rows)
    out = osp.join(args.work_dir, 'summary.json')
    with tempfile.NamedTemporaryFile('w', dir=args.work_dir, delete=False, suffix='.tmp') as f:
        json.dump(rows, f, indent=2)
    os.replace(f.name, out)
    print(f'\nwrote {out} ({time.perf_counter() - total:.0f} s in all)')
    status = 0
    cls_rows = [r for r in rows if r['task'] == 'cls']
    differs = [r['model'] for r in cls_rows if r['top1'] != r['top1_folded']]
    if differs:
        print(f'folded accuracy differs for {differs}', file=sys.stderr)
        status = 1
    low = [r['model'] for r in cls_rows if r['top1'] < args.min_top1]
    if low:
        print(f'top-1 below {args.min_top1:g} for {low}', file=sys.stderr)
        status = 1
    for problem in dense.check_rows(dense_rows, floors=not args.no_dense_floors):
        print(problem, file=sys.stderr)
        status = 1
    return status


if __name__ == '__main__':
    sys.exit(main())
