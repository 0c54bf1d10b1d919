# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Folding a training checkpoint into its deploy form (the library behind
``tools/deploy/fold_checkpoint.py``)."""
import os
import os.path as osp
import tempfile
from typing import Optional, Sequence

import torch

from .checkpoint import deploy_checkpoint
from .convert import fold_model
from .stock import build_model, max_abs_diff, num_params, probe_forward, probe_shape, run_stock_check


class DeployCheckError(RuntimeError):
    """A folded model failed a check; nothing was written.

    Attributes:
        report (dict): What :func:`fold_checkpoint` measured up to the failure.
    """

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


def fold_checkpoint(config,
                    checkpoint: str,
                    out: str,
                    force: bool = False,
                    fuse_conv_bn: bool = False,
                    stock_config: Optional[str] = None,
                    shape: Optional[Sequence[int]] = None,
                    batch: int = 2,
                    tol: float = 1e-4,
                    cfg_options: Optional[dict] = None) -> dict:
    """Builds the model of ``config``, loads ``checkpoint``, folds it
    (:func:`~mm_efficientconv.deploy.fold_model`) and writes
    ``{'state_dict', 'meta'}`` to ``out``.

    The folded model must reproduce the original on a random probe batch
    (within ``tol`` x ``max(1, max |output|)``); with ``stock_config`` the
    written state dict must also load strictly into that config in a process
    that never imports mm_efficientconv and reproduce the outputs there.
    ``out`` is only written (atomically) when every check passes; the input
    checkpoint is never modified. The model is built and folded on the CPU.

    Args:
        config (str | mmengine.Config): The config the checkpoint was trained
            with (registries must be populated: import mm_efficientconv).
        checkpoint (str): The training checkpoint.
        out (str): The output checkpoint.
        force (bool): Replace an existing ``out``. Defaults to False.
        fuse_conv_bn (bool): Also fuse each conv with its following BN (the
            BN keys disappear; excludes ``stock_config``). Defaults to False.
        stock_config (str, optional): A config without the plugin to check
            against. Defaults to None.
        shape (Sequence[int], optional): ``(H, W)`` of the probe; default from
            the config (:func:`~mm_efficientconv.deploy.probe_shape`).
        batch (int): Probe batch size. Defaults to 2.
        tol (float): Relative tolerance of the checks. Defaults to 1e-4.
        cfg_options (dict, optional): Overrides of ``config``. Defaults to None.

    Returns:
        dict: ``folded``, ``params_before``, ``params_after``, ``probe_shape``,
        ``max_abs_diff`` (folded vs original), ``num_keys``, ``path`` and, with
        ``stock_config``, ``stock`` (the stock check's result).

    Raises:
        ValueError: Bad arguments (``out`` is the input, both
            ``fuse_conv_bn`` and ``stock_config``, ``batch < 1``).
        FileNotFoundError: ``checkpoint`` does not exist.
        FileExistsError: ``out`` exists and ``force`` is False.
        DeployCheckError: A check failed (``report`` holds the numbers).
    """
    if fuse_conv_bn and stock_config:
        raise ValueError('stock_config needs the stock state-dict keys, which fuse_conv_bn '
                         'removes (BN entries): use one or the other')
    if batch < 1:
        raise ValueError(f'batch must be >= 1, got {batch}')
    if not osp.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {checkpoint}')
    if osp.exists(out) and osp.samefile(out, checkpoint):
        raise ValueError('out is the input checkpoint; the input is never overwritten')
    if osp.exists(out) and not force:
        raise FileExistsError(f'{out} exists; pass force=True to overwrite it')
    from mmengine.runner import load_checkpoint

    import mm_efficientconv
    model, cfg = build_model(config, cfg_options)
    loaded = load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    model.eval()
    x = torch.randn(probe_shape(cfg, model, batch, shape), generator=torch.Generator().manual_seed(0))
    report = dict(params_before=num_params(model), probe_shape=tuple(x.shape))
    reference = probe_forward(model, x)
    model, report['folded'] = fold_model(model, fuse_conv_bn)
    report['params_after'] = num_params(model)
    outputs = probe_forward(model, x)
    report['max_abs_diff'] = max_abs_diff(reference, outputs)
    scale = max([1.0] + [t.abs().max().item() for t in reference])
    if not report['max_abs_diff'] <= tol * scale:
        raise DeployCheckError(
            f"the folded model differs from the original by {report['max_abs_diff']:.3e} "
            f'(> {tol:g} x {scale:.3g}); nothing written', report)

    meta = dict(loaded.get('meta') or {}) if isinstance(loaded, dict) else {}
    meta.update(deploy=True, folded_modules=report['folded'], fuse_conv_bn=fuse_conv_bn,
                source_checkpoint=osp.abspath(checkpoint), source_config=str(config),
                params_before=report['params_before'], params_after=report['params_after'],
                max_abs_diff=report['max_abs_diff'],
                mm_efficientconv_version=mm_efficientconv.__version__)
    folded_checkpoint = deploy_checkpoint(model, meta)
    report['num_keys'] = len(folded_checkpoint['state_dict'])
    out = osp.abspath(out)
    os.makedirs(osp.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=osp.dirname(out), prefix='.fold_') as tmp:
        candidate = osp.join(tmp, osp.basename(out))
        torch.save(folded_checkpoint, candidate)
        if stock_config:
            probe_file = osp.join(tmp, 'probe.pth')
            torch.save({'input': x, 'outputs': outputs}, probe_file)
            report['stock'] = stock = run_stock_check(stock_config, candidate, probe_file)
            _check_stock(stock, stock_config, tol * scale, report)
        os.replace(candidate, out)
    report['path'] = out
    return report


def _check_stock(result: dict, stock_config: str, limit: float, report: dict) -> None:
    if result['imported_mm_efficientconv']:
        raise DeployCheckError('the stock check imported mm_efficientconv (does the stock '
                               'config import it?); nothing written', report)
    if result['missing'] or result['unexpected']:
        raise DeployCheckError(
            f"keys differ from {stock_config}: missing {result['missing'][:10]}, unexpected "
            f"{result['unexpected'][:10]}; nothing written", report)
    if not result['max_abs_diff'] <= limit:
        raise DeployCheckError(
            f"the stock model does not reproduce the folded outputs (max |stock - folded| "
            f"{result['max_abs_diff']:.3e} > {limit:.3g}); nothing written", report)
