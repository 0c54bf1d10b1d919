# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Dry-run a config end to end on a tiny synthetic dataset.

Loads an mmpretrain / mmdet / mmseg config, writes a mini dataset in the real
on-disk format of every dataset type the config uses, points all dataloaders
(and the COCO evaluator) at it, shrinks what makes a run expensive and runs
the real MMEngine ``Runner``: ``--iters`` training iterations, then one
validation with the config's own metric, which is printed
(``dry-run metric: <key> = <value>``) and written to
``<work-dir>/dry_run_result.json``. What the run changes in the config is
listed in :mod:`mm_efficientconv.testing.dry_run_config`; the work is done by
:func:`mm_efficientconv.testing.dry_run.dry_run`, this is its command line.

Examples:
    python tools/misc/dry_run.py configs/bsconv/resnet20_1xb128_cifar10.py \\
        --work-dir work_dirs/dry
    python -m torch.distributed.run --nproc_per_node 2 tools/misc/dry_run.py \\
        CONFIG --work-dir work_dirs/dry --launcher pytorch

Exit status: 0 on success, 2 when a dataset type of the config has no mini
dataset writer (the message lists the supported types), 1 on any other error.
"""
import argparse
import os
import sys

import mm_efficientconv  # noqa: F401  (registries and compat fixes first)
import torch.distributed as torch_dist
from mmengine.config import DictAction

from mm_efficientconv.compat import init_distributed
from mm_efficientconv.testing.dry_run import UnsupportedDatasetError, dry_run

EXIT_UNSUPPORTED = 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train a config for a few iterations on a synthetic mini dataset, '
        'then validate with its metric')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', required=True, help='directory for logs and the data')
    parser.add_argument('--iters', type=int, default=2, help='training iterations (>= 1)')
    parser.add_argument(
        '--max-size',
        type=int,
        default=None,
        help='largest crop (else resize) side after shrinking the pipelines; default 128 '
        'for detection, 64 for segmentation and classification')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch'], default='none', help='job launcher')
    parser.add_argument(
        '--keep-data', action='store_true', help='keep the mini dataset after the run')
    parser.add_argument(
        '--save-checkpoint', action='store_true', help='save a checkpoint after training')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config (key=value), applied before the dry-run changes')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f'--iters must be >= 1, got {args.iters}')
    if args.max_size is not None and args.max_size < 16:
        parser.error(f'--max-size must be >= 16, got {args.max_size}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    distributed = args.launcher != 'none'
    if distributed:
        init_distributed(args.launcher)  # the group outlives dry_run(): rank 0 reports below
    try:
        return report(dry_run(args.config, args.work_dir, iters=args.iters,
                              max_size=args.max_size, launcher=args.launcher,
                              keep_data=args.keep_data, save_checkpoint=args.save_checkpoint,
                              cfg_options=args.cfg_options))
    except UnsupportedDatasetError as e:
        print(f'dry_run: error: {e}', file=sys.stderr)
        return EXIT_UNSUPPORTED
    finally:
        if distributed and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def report(result: dict) -> int:
    """Prints the losses and the headline metric (rank 0); 1 if the metric
    is missing."""
    if torch_dist.is_initialized() and torch_dist.get_rank() != 0:
        return 0
    key = result['metric_key']
    print(f'dry-run losses: {", ".join(result["loss_keys"])}')
    if key is None or key not in result['metrics']:
        print(f'dry_run: error: the validation returned no {key or "headline"} metric '
              f'(got {sorted(result["metrics"])})', file=sys.stderr)
        return 1
    print(f'dry-run metric: {key} = {result["metric"]}')
    return 0

if __name__ == '__main__':
    sys.exit(main())
