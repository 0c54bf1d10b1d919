# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Test (and evaluate) a checkpoint with an OpenMMLab 2.x config.

Mirrors the upstream ``tools/test.py``. ``--deploy`` adds
``ConvDeployHook``, which switches the model to its deploy form after the
checkpoint is loaded (a training checkpoint is then evaluated as the folded
model that will be deployed).

Examples:
    python tools/test.py CONFIG CHECKPOINT --deploy
    python tools/test.py CONFIG CHECKPOINT --out results.pkl
    bash tools/dist_test.sh CONFIG CHECKPOINT 8 --deploy
"""
import argparse
import os
import os.path as osp

import mm_efficientconv  # noqa: F401  (registries and compat fixes first)
import mmengine
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save evaluation results and logs')
    parser.add_argument('--out', help='dump the predictions (or metrics, see --out-item) to '
                        'this pickle/json file')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='what --out holds; defaults to the predictions')
    parser.add_argument(
        '--deploy',
        action='store_true',
        help='switch the loaded model to its deploy form (ConvDeployHook) before testing')
    parser.add_argument(
        '--fuse-conv-bn',
        action='store_true',
        help='with --deploy: also fuse every conv with its following BN')
    parser.add_argument(
        '--amp', action='store_true', help='test with fp16 (sets test_cfg.fp16=True)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, as key=value pairs (e.g. '
        'test_dataloader.batch_size=1; no white space)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if args.out is None and args.out_item is not None:
        parser.error('--out-item needs --out')
    if args.fuse_conv_bn and not args.deploy:
        parser.error('--fuse-conv-bn needs --deploy')
    return args


def merge_args(cfg: Config, args) -> Config:
    """Merges the command-line arguments into the config."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint

    if args.amp:
        cfg.test_cfg = cfg.get('test_cfg', None) or ConfigDict()
        cfg.test_cfg.fp16 = True

    if args.deploy:
        hooks = list(cfg.get('custom_hooks', None) or [])
        existing = [h for h in hooks if h.get('type') == 'ConvDeployHook']
        if existing:
            for hook in existing:
                hook['fold_on_test'] = True
                hook['fuse_conv_bn'] = bool(hook.get('fuse_conv_bn', False) or args.fuse_conv_bn)
        else:
            hooks.append(
                dict(type='ConvDeployHook', fold_on_test=True, save_deploy_ckpt=False,
                     fuse_conv_bn=args.fuse_conv_bn))
        cfg.custom_hooks = hooks

    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    return cfg


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)

    if args.out and args.out_item in ('pred', None):
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    metrics = runner.test()
    if args.out and args.out_item == 'metrics':
        mmengine.dump(metrics, args.out)


if __name__ == '__main__':
    main()
