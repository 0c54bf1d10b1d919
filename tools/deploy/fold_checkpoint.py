# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Fold a training checkpoint into its deploy form.

Builds the model of CONFIG, loads CHECKPOINT, converts it with
``mm_efficientconv.deploy.switch_to_deploy`` (DO-Conv and MixConv
become plain ``nn.Conv2d`` at the same attribute path, BSConv folds what it
can) and writes ``{'state_dict', 'meta'}`` to OUT. For DO-Conv/MixConv models
the keys are exactly those of the stock config without the plugin, so OUT
loads strictly into a stock mmpretrain/mmdet/mmseg model;
``--check-stock-config STOCK_CONFIG`` proves it in a subprocess that never
imports mm_efficientconv.

The input file is never modified; OUT is written atomically (temporary file +
``os.replace``) and only when every check passed; an existing OUT is only
replaced with ``--force``. The work is done by
:func:`mm_efficientconv.deploy.fold_checkpoint`; this is its command line.

Examples:
    python tools/deploy/fold_checkpoint.py CONFIG epoch_100.pth epoch_100_deploy.pth
    python tools/deploy/fold_checkpoint.py CONFIG ckpt.pth out.pth \\
        --check-stock-config mmpretrain::resnet/resnet50_8xb32_in1k.py
"""
import argparse
import os.path as osp
import sys

# probe_shape: kept importable from here for tools that used it (moved to mm_efficientconv.deploy)
from mm_efficientconv.deploy import DeployCheckError, fold_checkpoint, probe_shape  # noqa: F401


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Fold a training checkpoint into its deploy (inference) form')
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='training checkpoint (never modified)')
    parser.add_argument('out', help='output checkpoint')
    parser.add_argument('--force', action='store_true', help='overwrite an existing OUT')
    parser.add_argument('--fuse-conv-bn', action='store_true',
                        help='also fuse every conv with its following BN (mmcv.cnn.fuse_conv_bn); '
                        'the BN keys then disappear from the state dict')
    parser.add_argument('--check-stock-config', metavar='STOCK_CONFIG',
                        help='stock config without the plugin (e.g. mmpretrain::resnet/...): load '
                        'OUT strictly into it in a subprocess that never imports '
                        'mm_efficientconv and compare outputs')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='probe input size (default: from the config pipelines)')
    parser.add_argument('--batch', type=int, default=2, help='probe batch size (default: 2)')
    parser.add_argument('--tol', type=float, default=1e-4,
                        help='largest allowed |folded - original| output difference, relative to '
                        'max(1, max |original|) (default: 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of CONFIG, as key=value pairs')
    args = parser.parse_args(argv)
    if args.fuse_conv_bn and args.check_stock_config:
        parser.error('--check-stock-config needs the stock state-dict keys, which '
                     '--fuse-conv-bn removes (BN entries): use one or the other')
    if args.batch < 1:
        parser.error(f'--batch must be >= 1, got {args.batch}')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint}')
    if osp.exists(args.out) and osp.samefile(args.out, args.checkpoint):
        parser.error('OUT is the input checkpoint; the input is never overwritten')
    if osp.exists(args.out) and not args.force:
        parser.error(f'{args.out} exists; pass --force to overwrite it')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        report = fold_checkpoint(
            args.config, args.checkpoint, args.out, force=args.force,
            fuse_conv_bn=args.fuse_conv_bn, stock_config=args.check_stock_config,
            shape=args.shape, batch=args.batch, tol=args.tol, cfg_options=args.cfg_options)
    except DeployCheckError as exc:
        print_report(args, exc.report)
        print(f'ERROR: {exc}', file=sys.stderr)
        return 1
    print_report(args, report)
    return 0


def print_report(args, report: dict) -> None:
    print(f'config:          {args.config}')
    print(f'checkpoint:      {args.checkpoint}')
    if 'folded' in report:
        print(f"layers folded:   {report['folded']}"
              + (' (+ conv-BN fusion)' if args.fuse_conv_bn else ''))
        print(f"params:          {report['params_before']:,} -> {report['params_after']:,}")
    print(f"probe input:     {report['probe_shape']}")
    if 'max_abs_diff' in report:
        print(f"max |folded - original| output: {report['max_abs_diff']:.3e}")
    stock = report.get('stock')
    if stock and 'max_abs_diff' in stock:
        print(f"stock config:    {args.check_stock_config}: strict load ok, "
              f"max |stock - folded| output: {stock['max_abs_diff']:.3e}")
    if 'path' in report:
        print(f"saved:           {args.out} ({report['num_keys']} keys)")


if __name__ == '__main__':
    sys.exit(main())
