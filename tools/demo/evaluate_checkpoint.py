# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Evaluate a checkpoint on the test set of a config, strictly loaded.

Default (stock) mode: the process never imports ``mm_efficientconv`` — the
config must not import it either (``custom_imports``) — and this is asserted
before the model is built and after the evaluation. This is how the demo
proves that a folded DO-Conv checkpoint is an ordinary mmdet / mmseg
checkpoint of the stock config.

``--deployed``: for configs that need the plugin (MixNet is its own
backbone). The model is switched to its deploy form *before* the checkpoint
is loaded, so a folded checkpoint loads into the folded structure; every
MixConv must have become one depthwise ``nn.Conv2d`` and nothing may be left
to fold.

The last line of the output is ``EVALUATION {json}``: the metrics and what was
checked.

Examples:
    python tools/demo/evaluate_checkpoint.py \\
        configs/demo/faster-rcnn_r18_fpn_digit-scenes.py deploy.pth --work-dir work_dirs/x
    python tools/demo/evaluate_checkpoint.py \\
        configs/demo/ssdlite_mixnet-s_digit-scenes.py deploy.pth --deployed
"""
import argparse
import json
import os.path as osp
import sys


def _plugin_imported() -> bool:
    return any(name == 'mm_efficientconv' or name.startswith('mm_efficientconv.')
               for name in sys.modules)


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint (strict load)')
    parser.add_argument('config', help='test config')
    parser.add_argument('checkpoint', help='checkpoint to load strictly')
    parser.add_argument('--work-dir', help='directory for the logs (default: next to the '
                        'checkpoint)')
    parser.add_argument('--deployed', action='store_true',
                        help='import mm_efficientconv and switch the model to its deploy form '
                        'before loading (for a folded checkpoint of a plugin backbone)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, as key=value pairs')
    args = parser.parse_args(argv)
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint}')
    return args


def _folded_mixconv_report(model) -> dict:
    """Switches ``model`` to deploy form; checks every MixConv became one
    depthwise ``nn.Conv2d`` and nothing is left to fold."""
    import torch.nn as nn

    from mm_efficientconv import switch_to_deploy
    from mm_efficientconv.layers.deploy import count_deployable
    mixconvs = [name for name, m in model.named_modules()
                if type(m).__name__ == 'MixConv' and not m.plain]
    switch_to_deploy(model)
    modules = dict(model.named_modules())
    not_depthwise = [
        name for name in mixconvs
        if not (type(modules[name]) is nn.Conv2d
                and modules[name].groups == modules[name].in_channels > 1)
    ]
    if not_depthwise or count_deployable(model):
        raise RuntimeError(f'deploy form incomplete: MixConv not one depthwise conv: '
                           f'{not_depthwise[:5]}; still foldable: {count_deployable(model)}')
    return dict(mixconv_folded=len(mixconvs))


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.deployed and _plugin_imported():
        raise RuntimeError('stock evaluation: mm_efficientconv is imported before the start')
    if args.deployed:
        import mm_efficientconv  # noqa: F401  (registries and compat fixes)
    from mmengine.config import Config
    from mmengine.runner import Runner

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir or osp.join(osp.dirname(osp.abspath(args.checkpoint)),
                                             'evaluate_' + osp.basename(args.checkpoint))
    cfg.load_from = None  # loaded strictly below
    cfg.resume = False
    if not args.deployed and _plugin_imported():
        raise RuntimeError(f'stock evaluation: loading {args.config} imported '
                           'mm_efficientconv (custom_imports?)')
    runner = Runner.from_cfg(cfg)
    report = dict(config=args.config, checkpoint=osp.abspath(args.checkpoint),
                  deployed=args.deployed)
    if args.deployed:
        report.update(_folded_mixconv_report(runner.model))
    runner.load_checkpoint(args.checkpoint, map_location='cpu', strict=True)
    metrics = runner.test()
    report['imported_mm_efficientconv'] = _plugin_imported()
    if not args.deployed and report['imported_mm_efficientconv']:
        raise RuntimeError('stock evaluation: mm_efficientconv was imported while testing')
    report['metrics'] = {k: float(v) for k, v in metrics.items()
                         if isinstance(v, (int, float)) or hasattr(v, '__float__')}
    print('EVALUATION ' + json.dumps(report), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
