# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""A hook that runs tests on the folded (deploy) model and writes a folded
checkpoint at the end of training."""
import logging
import os.path as osp
from typing import Optional

import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

# atomic_torch_save, cpu_state_dict and plain_meta: re-exported from their old home
from mm_efficientconv.deploy import (atomic_torch_save, count_deployable, cpu_copy,  # noqa: F401
                                     cpu_state_dict, fold_model, plain_meta, save_deploy_checkpoint)


@HOOKS.register_module()
class ConvDeployHook(Hook):
    """Runs the test loop on the deploy (folded) model and writes a folded
    checkpoint after training.

    * ``before_test``: ``Runner.test()`` has loaded the checkpoint by then, so
      the hook converts the unwrapped model with
      :func:`~mm_efficientconv.deploy.switch_to_deploy` (DO-Conv and
      MixConv become plain ``nn.Conv2d``, BSConv folds its inner norms, ...).
      ``tools/test.py --deploy`` on a *training* checkpoint thus evaluates the
      model that will be deployed.
    * ``after_train`` (rank 0 only): loads the state dict of the last
      checkpoint (so EMA weights saved by ``EMAHook`` are the ones folded;
      falls back to the in-memory weights when there is no local checkpoint)
      into a CPU copy of the model, folds the copy, and writes
      ``{'state_dict', 'meta'}`` to ``<last checkpoint stem>_deploy.pth`` in
      the last checkpoint's directory (``<work_dir>/<stem>_deploy.pth``
      by default) atomically. The training model and its parameters are not
      touched. ``meta`` is the checkpoint's own ``meta`` with ``deploy=True``,
      ``folded_modules``, ``fuse_conv_bn`` and ``source_checkpoint`` added.

    Validation during training is left alone: the hook does nothing in
    ``before_val``, so trained parameters are never folded.

    Args:
        fold_on_test (bool): Convert the model before the test loop.
            Defaults to True.
        save_deploy_ckpt (bool): Write the folded checkpoint after training.
            Defaults to True.
        fuse_conv_bn (bool): Also fuse each conv with its following BN
            (``mmcv.cnn.fuse_conv_bn``) in both cases. The fused checkpoint
            no longer has the BN keys of the stock config. Defaults to False.

    Example:
        >>> custom_hooks = [dict(type='ConvDeployHook')]
    """

    priority = 'LOW'

    def __init__(self,
                 fold_on_test: bool = True,
                 save_deploy_ckpt: bool = True,
                 fuse_conv_bn: bool = False) -> None:
        for name, value in (('fold_on_test', fold_on_test),
                            ('save_deploy_ckpt', save_deploy_ckpt),
                            ('fuse_conv_bn', fuse_conv_bn)):
            if not isinstance(value, bool):
                raise ValueError(f'ConvDeployHook: {name} must be True or False, got {value!r}')
        self.fold_on_test = fold_on_test
        self.save_deploy_ckpt = save_deploy_ckpt
        self.fuse_conv_bn = fuse_conv_bn
        self.deploy_ckpt: Optional[str] = None

    def before_test(self, runner) -> None:
        """Converts the (already loaded) model to its deploy form."""
        if not self.fold_on_test:
            return
        wrapped = is_model_wrapper(runner.model)
        model = runner.model.module if wrapped else runner.model
        folded, num = fold_model(model, self.fuse_conv_bn)
        if folded is not model:
            if wrapped:
                runner.model.module = folded
            else:
                runner.model = folded
        print_log(
            f'ConvDeployHook: switched {num} modules to deploy form before testing'
            + (' and fused conv+BN' if self.fuse_conv_bn else ''),
            logger='current')

    def _deploy_path(self, runner, last_ckpt: Optional[str]) -> str:
        if last_ckpt:
            stem = osp.splitext(osp.basename(last_ckpt))[0]
            directory = osp.dirname(last_ckpt) if osp.isfile(last_ckpt) else runner.work_dir
        else:
            by_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
            stem = f'epoch_{runner.epoch}' if by_epoch else f'iter_{runner.iter}'
            directory = runner.work_dir
        return osp.join(directory, f'{stem}_deploy.pth')

    def after_train(self, runner) -> None:
        """Writes the folded checkpoint (rank 0)."""
        if not self.save_deploy_ckpt or not is_main_process():
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if count_deployable(model) == 0 and not self.fuse_conv_bn:
            print_log('ConvDeployHook: the model has no module to switch to deploy form; '
                      'no deploy checkpoint written', logger='current', level=logging.WARNING)
            return
        last_ckpt = runner.message_hub.get_info('last_ckpt')
        meta = {}
        copied = cpu_copy(model)
        source = 'in-memory model at the end of training'
        if last_ckpt and osp.isfile(last_ckpt):
            # the file was written by this very run: a full (non weights-only) load is safe
            checkpoint = torch.load(last_ckpt, map_location='cpu', weights_only=False)
            copied.load_state_dict(checkpoint['state_dict'], strict=True)
            meta = dict(checkpoint.get('meta') or {})
            source = last_ckpt
        elif getattr(model, 'dataset_meta', None) is not None:
            meta['dataset_meta'] = model.dataset_meta
        copied.eval()
        folded, num = fold_model(copied, self.fuse_conv_bn)
        meta.update(deploy=True, folded_modules=num, fuse_conv_bn=self.fuse_conv_bn,
                    source_checkpoint=source, epoch=meta.get('epoch', runner.epoch),
                    iter=meta.get('iter', runner.iter))
        path = self._deploy_path(runner, last_ckpt)
        save_deploy_checkpoint(folded, meta, path)
        self.deploy_ckpt = path
        print_log(f'ConvDeployHook: folded {num} modules of {source} into {path}',
                  logger='current')
