# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The GPU check of issue 14 (``tools/analysis/gpu_check.py`` is its command
line). Sections, each reported pass/fail (a failing section does not stop
the others):

1. ``parity``: every layer (``BSConvU``, ``BSConvS``, ``MixConv``,
   ``MixGroupedPointwise``, ``DOConv`` dense and depthwise) and its deploy
   form on the device against a float64 CPU reference of the same weights, in
   fp32 (TF32 off) and under fp16 / bf16 autocast: outputs, input gradients and
   parameter gradients within :data:`TOLERANCES`; under autocast the output
   dtype must be the one ``nn.Conv2d`` gives under the same autocast.
2. ``train``: training steps of DO-Conv ResNet-50, MixNet-S and BSConv-S
   MobileNetV2 (with ``loss_ortho``) through mmpretrain's ``train_step`` with
   mmengine's ``AmpOptimWrapper`` in float16 and in bfloat16: finite losses
   and parameters, ``loss_ortho`` in float32. (``AmpOptimWrapper`` refuses to
   run without an accelerator; on the CPU the same steps run in an
   ``OptimWrapper`` under ``torch.autocast('cpu')``.)
3. ``benchmark``: :func:`~.runner.run_benchmark` on the device (on CUDA the
   training steps are AMP channels-last ResNet-50 at batch 64), checked
   against its targets (on CUDA ``profiles.CUDA_TARGETS``); the layer-level
   DO-Conv ratios are reported; on CUDA the training steps again at batch
   256.
4. ``onnx``: the package's ONNX export (fold, export, onnxruntime parity) of a
   DO-Conv classifier that lives on the device.
5. ``profile``: wall vs kernel time, kernels and ATen calls of the
   benchmark's ResNet and MixNet-S training steps (reported).

Only the layers, mmpretrain and timm are needed (no mmdet / mmseg, no
compiled mmcv ops).
"""
import copy
import math
import os
import os.path as osp
import shutil
import time
import traceback
from typing import Sequence

import torch
import torch.nn as nn

#: Relative error bounds (``max |got - ref| / max |ref|``) per precision.
TOLERANCES = {'fp32': 1e-4, 'fp16': 1e-2, 'bf16': 5e-2}
#: Check profiles: parity input size, training batch / resolution / steps,
#: benchmark profile, ONNX input size, and the batch at which the benchmark's
#: training steps run a second time (None: not at all; see check_benchmark).
PROFILES = {
    'full': dict(parity_size=32, train_batch=32, train_resolution=224, train_steps=6,
                 benchmark='quick', onnx_size=224, scaling_batch=256),
    'short': dict(parity_size=16, train_batch=2, train_resolution=64, train_steps=2,
                  benchmark='smoke', onnx_size=64, scaling_batch=None),
}
SECTIONS = ('parity', 'train', 'benchmark', 'onnx', 'profile')


# ------------------------------------------------------------------ parity
def _layers(size: int):
    """(name, factory, input shape) of every layer of the package; square
    inputs of ``size``."""
    from mm_efficientconv.layers import BSConvS, BSConvU, DOConv, MixConv, MixGroupedPointwise
    return [
        ('BSConvU', lambda: BSConvU(16, 24, 3, stride=2, padding=1, bias=True), (2, 16, size, size)),
        ('BSConvS', lambda: BSConvS(32, 24, 3, padding=1, bias=False, p=0.25), (2, 32, size, size)),
        ('MixConv', lambda: MixConv(24, 24, 7, padding=3, groups=24, bias=False,
                                    kernel_sizes=(3, 5, 7)), (2, 24, size, size)),
        ('MixGroupedPointwise', lambda: MixGroupedPointwise(24, 36, 1, bias=False, num_splits=2),
         (2, 24, size, size)),
        ('DOConv', lambda: DOConv(16, 24, 3, padding=1, bias=True), (2, 16, size, size)),
        ('DOConv depthwise', lambda: DOConv(16, 32, 3, padding=1, groups=16, bias=False),
         (2, 16, size, size)),
    ]


def _forward_backward(module, x, grad_out, device_type, dtype):
    """Output, input gradient and parameter gradients (float64 CPU copies)."""
    x = x.detach().clone().requires_grad_(True)
    for p in module.parameters():
        p.grad = None
    if dtype is None:
        out = module(x)
    else:
        with torch.autocast(device_type, dtype=dtype):
            out = module(x)
    (out.float() * grad_out.to(out.device, torch.float32)).sum().backward()
    grads = {n: p.grad.detach().double().cpu() for n, p in module.named_parameters()
             if p.grad is not None}
    return out.detach().double().cpu(), out.dtype, x.grad.detach().double().cpu(), grads


def _rel_err(got, ref) -> float:
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def check_parity(device, size: int) -> dict:
    """Every layer and its deploy form on ``device`` vs float64 on the CPU
    (TF32 off meanwhile; the flags are restored afterwards)."""
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _check_parity(device, size)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _check_parity(device, size: int) -> dict:
    from mm_efficientconv.layers import switch_to_deploy
    precisions = {'fp32': None, 'fp16': torch.float16, 'bf16': torch.bfloat16}
    rows, ok = [], True
    for name, factory, shape in _layers(size):
        torch.manual_seed(0)
        layer = factory()
        with torch.no_grad():  # a trained-looking state: every parameter non-trivial
            for p in layer.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        ref = copy.deepcopy(layer).double()
        x = torch.randn(shape, dtype=torch.float64)
        with torch.no_grad():
            grad_out = torch.randn_like(ref(x))
        ref_out, _, ref_dx, ref_grads = _forward_backward(ref, x, grad_out, 'cpu', None)
        ref.eval()
        with torch.no_grad():
            ref_eval = ref(x)
        for precision, dtype in precisions.items():
            tol = TOLERANCES[precision]
            mod = copy.deepcopy(layer).to(device)
            plain = nn.Conv2d(shape[1], 8, 3).to(device)
            xd = x.float().to(device)
            out, out_dtype, dx, grads = _forward_backward(mod, xd, grad_out, device.type, dtype)
            if dtype is None:
                want_dtype = torch.float32
            else:
                with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
                    want_dtype = plain(xd).dtype
            errors = dict(out=_rel_err(out, ref_out), dx=_rel_err(dx, ref_dx),
                          **{f'grad {n}': _rel_err(g, ref_grads[n]) for n, g in grads.items()})
            missing = sorted(set(ref_grads) - set(grads))
            deployed = switch_to_deploy(copy.deepcopy(mod).eval())
            with torch.no_grad():
                if dtype is None:
                    dep = deployed(xd)
                else:
                    with torch.autocast(device.type, dtype=dtype):
                        dep = deployed(xd)
            errors['deploy out'] = _rel_err(dep.double().cpu(), ref_eval)
            passed = (max(errors.values()) <= tol and not missing and out_dtype == want_dtype
                      and dep.dtype == want_dtype)
            ok &= passed
            rows.append(dict(layer=name, precision=precision, passed=passed, tol=tol,
                             max_rel_err=max(errors.values()), errors=errors,
                             dtype=str(out_dtype).replace('torch.', ''),
                             conv2d_dtype=str(want_dtype).replace('torch.', ''),
                             missing_grads=missing))
    return dict(passed=ok, rows=rows)


# ------------------------------------------------------------------ training
def check_train(device, cfg: dict) -> dict:
    """Training steps of the three networks in float16 and bfloat16 AMP."""
    from . import train_suites as ts
    models = {
        'DO-Conv ResNet-50': ts.resnet_cfgs(50)['doconv'],
        'MixNet-S': ts.mixnet_cfgs()['ours'],
        'BSConv-S MobileNetV2': ts.mobilenet_v2_cfgs()['bsconvs'],
    }
    rows, ok = [], True
    for name, model_cfg in models.items():
        for amp in ('float16', 'bfloat16'):
            torch.manual_seed(0)
            model = ts.build_classifier(model_cfg, device)
            if 'MobileNetV2' in name:
                ts.install_ortho_reg(model, alpha=0.1)
            batch = ts.make_batch(cfg['train_batch'], cfg['train_resolution'], device)
            if device.type == 'cuda':
                wrapper, context = ts.make_optim_wrapper(model, amp), None
            else:  # mmengine's AmpOptimWrapper needs an accelerator
                wrapper = ts.make_optim_wrapper(model, None)
                context = torch.autocast('cpu', dtype=getattr(torch, amp))
            step = ts.TrainStep(model, batch, wrapper)
            start = time.time()
            losses = []
            for _ in range(cfg['train_steps']):
                if context is None:
                    step()
                else:
                    with context:
                        step()
                losses.append(step.last_losses['loss'])
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            dtypes = {k: str(v.dtype).replace('torch.', '') for k, v in step.last_log_vars.items()}
            scaler = getattr(wrapper, 'loss_scaler', None)  # float16: steps with inf are skipped
            loss_scale = float(scaler.get_scale()) if scaler is not None else None
            finite = all(math.isfinite(v) for v in losses)
            ortho_ok = 'MobileNetV2' not in name or dtypes.get('loss_ortho') == 'float32'
            params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
            passed = finite and ortho_ok and params_finite
            ok &= passed
            rows.append(dict(model=name, amp=amp, passed=passed, losses=losses, loss_scale=loss_scale,
                             last=step.last_losses, dtypes=dtypes, params_finite=params_finite,
                             wrapper=type(wrapper).__name__, seconds=round(time.time() - start, 2)))
            del model, step, wrapper
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    return dict(passed=ok, rows=rows)


# ------------------------------------------------------------------ benchmark
#: The benchmark's whole-network training-step suites.
TRAIN_SUITES = ('resnet_train', 'mixnet_train', 'mobilenet_v2_train')


def _train_step_ms(report: dict) -> dict:
    """Median milliseconds of every network of the training-step cases."""
    return {f"{c['family']} {name}": round(r['median_ms'], 2) for c in report['cases']
            if c['mode'] == 'train_step' for name, r in c['results'].items()}


def check_benchmark(device, cfg: dict, out_base: str) -> dict:
    """The benchmark on the device: every key measured, finite training
    losses and, on CUDA, the GPU targets met; with the profile's
    ``scaling_batch`` the training steps again at that batch (reported, no
    targets)."""
    from .profiles import DESCRIPTIONS
    from .report import write_report
    from .runner import run_benchmark
    report = run_benchmark(cfg['benchmark'], device=device.type, keep_going=True)
    write_report(report, out_base + '_benchmark.json')
    keys = {k: report[k] for k in list(report['targets']) + list(report['reported'])}
    met = dict(report['met'])
    layer = [dict(case=c['case'], mode=c['mode'], ratios={k: round(v, 4) for k, v in
                                                          c['ratios'].items()})
             for c in report['cases'] if c['family'] == 'doconv']
    finite = all(c.get('finite_losses', True) for c in report['cases'])
    complete = set(keys) == set(DESCRIPTIONS)
    steps = {report['settings']['train_batch']: _train_step_ms(report)}
    scaling = {}
    if cfg.get('scaling_batch'):
        # the same training steps at a larger batch: a step whose time grows less than the
        # batch was bound by the host (operator dispatch), not by the GPU
        big = run_benchmark(cfg['benchmark'], device=device.type, keep_going=True,
                            only=TRAIN_SUITES, train_batch=cfg['scaling_batch'])
        write_report(big, out_base + f"_benchmark_batch{cfg['scaling_batch']}.json")
        steps[cfg['scaling_batch']] = _train_step_ms(big)
        scaling = {k: big[k] for k in list(big['targets']) + list(big['reported'])}
        finite &= all(c.get('finite_losses', True) for c in big['cases'])
    # the targets hold for the GPU profile; a CPU verification run checks that every path runs
    targets_met = all(met.values()) or device.type != 'cuda'
    return dict(passed=targets_met and finite and complete and not report['suite_errors'],
                profile=cfg['benchmark'], keys=keys, suite_errors=report['suite_errors'],
                targets=report['targets'], met=met, doconv_layers=layer, finite_losses=finite,
                train_step_ms=steps, keys_at_scaling_batch=scaling,
                report=out_base + '_benchmark.json', elapsed_s=round(report['elapsed_s'], 1))


# ------------------------------------------------------------------ profile
def _profile_step(step, device, rounds: int = 3) -> dict:
    """Wall and kernel milliseconds, kernels and ATen calls of one step."""
    from torch.profiler import ProfilerActivity, profile

    def sync():
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    for _ in range(3):  # warm-up: cuDNN autotuning, the float16 loss scale settling
        step()
    sync()
    start = time.perf_counter()
    for _ in range(rounds):
        step()
    sync()
    wall_ms = (time.perf_counter() - start) / rounds * 1e3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    with profile(activities=activities) as prof:
        for _ in range(rounds):
            step()
        sync()
    events = prof.events()
    kernels = [e for e in events if 'CUDA' in str(getattr(e, 'device_type', ''))]
    kernel_ms = sum(getattr(e, 'device_time_total', 0) for e in kernels) / 1e3 / rounds
    aten = sum(1 for e in events if e.name.startswith('aten::')) / rounds
    return dict(wall_ms=round(wall_ms, 2), kernel_ms=round(kernel_ms, 2),
                kernels=round(len(kernels) / rounds), aten_calls=round(aten),
                gpu_busy=round(kernel_ms / wall_ms, 3) if device.type == 'cuda' else None)


def check_profile(device, cfg: dict) -> dict:
    """Where the benchmark's training steps spend their time (the profile's
    benchmark batch and settings): wall vs kernel milliseconds per step, the
    kernels and ATen calls a step launches. A step whose kernels fill far less
    than its wall time is bound by the host (operator dispatch); what a layer
    adds there costs host time, not GPU time. Reported, never failed."""
    from .profiles import profile_config
    from . import train_suites as ts
    bench = profile_config(cfg['benchmark'], device.type)
    amp = 'float16' if bench['train_amp'] else None
    networks = {
        f"ResNet-{bench['train_resnet']} plain": ts.resnet_cfgs(bench['train_resnet'])['plain'],
        f"ResNet-{bench['train_resnet']} DO-Conv": ts.resnet_cfgs(bench['train_resnet'])['doconv'],
        'MixNet-S ours': ts.mixnet_cfgs()['ours'], 'MixNet-S timm': ts.mixnet_cfgs()['timm'],
    }
    rows = []
    for name, model_cfg in networks.items():
        torch.manual_seed(0)
        model = ts.build_classifier(model_cfg, device).to(memory_format=torch.channels_last)
        batch = ts.make_batch(bench['train_batch'], bench['train_resolution'], device,
                              channels_last=True)
        step = ts.TrainStep(model, batch, ts.make_optim_wrapper(model, amp))
        rows.append(dict(network=name, batch=bench['train_batch'], **_profile_step(step, device)))
        del model, step
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return dict(passed=True, rows=rows)


# ------------------------------------------------------------------ onnx
def check_onnx(device, cfg: dict, out_base: str) -> dict:
    """Export of a DO-Conv classifier that lives on ``device``."""
    from mm_efficientconv.deploy import export_onnx

    from . import train_suites as ts
    model = ts.build_classifier(ts.resnet_cfgs(18)['doconv'], device)
    where = str(next(model.parameters()).device)
    path = out_base + '_resnet18-doconv.onnx'
    result = export_onnx(model, path, (1, 3, cfg['onnx_size'], cfg['onnx_size']), force=True)
    result = {k: (list(v) if isinstance(v, tuple) else v) for k, v in result.items()}
    return dict(passed=True, model_device=where, **result)


# ------------------------------------------------------------------ packing
#: Distributions the check imports beyond torch (bsconv: the benchmark's
#: reference BSConv-U): packed with every pure-Python distribution they
#: require (their compiled modules, mmcv's ops, left out).
PACK_ROOTS = ('mmengine', 'mmcv', 'mmpretrain', 'timm', 'bsconv')
_COMPILED = ('.so', '.pyd', '.dylib')


def _requirement_names(dist) -> list:
    """Names of the distributions ``dist`` requires in this environment
    (extras left out; environment markers evaluated)."""
    from packaging.requirements import Requirement
    names = []
    for line in dist.requires or ():
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({'extra': ''}):
            names.append(req.name)
    return names


def pack_pure_python_deps(target: str, roots: Sequence[str] = PACK_ROOTS) -> dict:
    """Copies the distributions ``roots`` and every pure-Python distribution
    they require (recursively) into the new folder ``target``, with their
    ``.dist-info``, so that a machine with torch but without the OpenMMLab
    stack can import them from ``target`` (``gpu_check.py --deps``).

    A root is copied without its compiled modules (mmcv without its ops);
    a required distribution with compiled modules is not copied and is listed
    under ``binary`` (it must be installed on that machine). Written to a
    temporary folder first, then renamed.

    Args:
        target (str): The new folder; it must not exist.
        roots (Sequence[str]): Distribution names. Defaults to
            :data:`PACK_ROOTS`.

    Returns:
        dict: ``copied`` (distribution: bytes), ``binary`` and ``missing``
        (distribution names).
    """
    import importlib.metadata as metadata
    if osp.exists(target):
        raise SystemExit(f'--pack-deps: {target} exists; choose a new folder')
    tmp = target.rstrip('/') + '.tmp'
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    copied, binary, missing, seen = {}, [], [], set()
    queue = [(name, True) for name in roots]
    try:
        while queue:
            name, is_root = queue.pop(0)
            key = name.lower().replace('_', '-')
            if key in seen:
                continue
            seen.add(key)
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.append(name)
                continue
            files = [f for f in dist.files or () if not str(f).startswith('..')
                     and '__pycache__' not in f.parts and not f.parts[0].endswith('tests')]
            if not is_root and any(str(f).endswith(_COMPILED) for f in files):
                binary.append(dist.metadata['Name'])
                continue
            size = 0
            for f in files:
                if str(f).endswith(_COMPILED + ('.pyc', )):
                    continue
                src = f.locate()
                if osp.isfile(src):
                    dst = osp.join(tmp, str(f))
                    os.makedirs(osp.dirname(dst), exist_ok=True)
                    shutil.copy2(src, dst)
                    size += osp.getsize(dst)
            copied[dist.metadata['Name']] = size
            queue += [(n, False) for n in _requirement_names(dist)]
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f'packed {len(copied)} distributions ({sum(copied.values()) / 2**20:.1f} MiB) into '
          f'{target}: {sorted(copied)}; with compiled modules, to be installed on the machine: '
          f'{sorted(binary)}; not installed here: {missing}')
    return dict(copied=copied, binary=binary, missing=missing)


# ------------------------------------------------------------------ run
def _verdict(report: dict) -> str:
    if not report.get('complete', True):
        return f"INCOMPLETE ({len(report['sections'])} sections so far)"
    return 'PASSED' if report['passed'] else 'FAILED'


def summary_markdown(report: dict) -> str:
    """A short markdown summary of a :func:`run_gpu_check` report."""
    m = report['machine']
    lines = [f"# GPU check ({report['profile']}, {m['device']})", '',
             f"{m.get('gpu', m.get('cpu', ''))}; torch {m['torch']}; "
             f"{report['elapsed_s']:.0f} s; **{_verdict(report)}**", '',
             '| section | passed | seconds | note |', '|---|---|---|---|']
    for name, sec in report['sections'].items():
        note = sec.get('error', '').splitlines()[-1] if 'error' in sec else ''
        if name == 'benchmark' and 'keys' in sec:
            note = ', '.join(f'{k} {v:.3f}' for k, v in sec['keys'].items())
            for batch, ms in sec.get('train_step_ms', {}).items():
                note += f'; training steps at batch {batch} (ms): ' + ', '.join(
                    f'{k} {v:.1f}' for k, v in ms.items())
            if sec.get('keys_at_scaling_batch'):
                note += '; at the larger batch: ' + ', '.join(
                    f'{k} {v:.3f}' for k, v in sec['keys_at_scaling_batch'].items())
        if name == 'parity' and 'rows' in sec:
            worst = max(sec['rows'], key=lambda r: r['max_rel_err'] / r['tol'])
            note = (f"{len(sec['rows'])} layer x precision checks; closest to its bound: "
                    f"{worst['layer']} {worst['precision']} {worst['max_rel_err']:.1e} "
                    f"(<= {worst['tol']:g})")
        if name == 'train' and 'rows' in sec:
            note = '; '.join(f"{r['model']} {r['amp']} loss {r['losses'][-1]:.3f}"
                             for r in sec['rows'])
        if name == 'profile' and 'rows' in sec:
            note = '; '.join(f"{r['network']} {r['wall_ms']:.1f} ms wall, {r['kernel_ms']:.1f} ms "
                             f"kernels, {r['aten_calls']} ATen calls" for r in sec['rows'])
        if name == 'onnx' and 'max_abs_diff' in sec:
            note = f"model on {sec['model_device']}, onnxruntime diff {sec['max_abs_diff']:.1e}"
        lines.append(f"| {name} | {'yes' if sec['passed'] else '**no**'} | "
                     f"{sec['seconds']} | {note} |")
    return '\n'.join(lines) + '\n'


def run_gpu_check(device: str = 'cuda', profile: str = None, sections: Sequence[str] = SECTIONS,
                  out: str = 'work_dirs/gpu_check/gpu_check.json') -> dict:
    """Runs the check's ``sections`` and writes ``out`` (JSON) and a markdown
    summary beside it, atomically (the benchmark section also writes
    ``OUT_benchmark.{json,md,png}``, the ONNX section
    ``OUT_resnet18-doconv.onnx``).

    Args:
        device (str): ``'cuda'`` or ``'cpu'``. Defaults to 'cuda'.
        profile (str, optional): A key of :data:`PROFILES`; None: ``'full'``
            on CUDA, ``'short'`` on the CPU. Defaults to None.
        sections (Sequence[str]): A subset of :data:`SECTIONS`. Defaults to
            all.
        out (str): Path of the JSON report.

    Returns:
        dict: The report; ``passed`` is True when every section passed.
    """
    import json

    from .report import atomic_write, machine_info
    if device not in ('cuda', 'cpu'):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise ValueError(f'sections must be a non-empty subset of {SECTIONS}, got {list(sections)}')
    if device == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device is available')
    dev = torch.device(device)
    profile = profile or ('full' if dev.type == 'cuda' else 'short')
    if profile not in PROFILES:
        raise ValueError(f'profile must be one of {sorted(PROFILES)}, got {profile!r}')
    cfg = PROFILES[profile]
    out_base = osp.splitext(osp.abspath(out))[0]
    import mm_efficientconv  # noqa: F401  (registration)
    start = time.time()
    runners = dict(parity=lambda: check_parity(dev, cfg['parity_size']),
                   train=lambda: check_train(dev, cfg),
                   benchmark=lambda: check_benchmark(dev, cfg, out_base),
                   onnx=lambda: check_onnx(dev, cfg, out_base),
                   profile=lambda: check_profile(dev, cfg))
    results, machine = {}, machine_info(dev)
    for name in sections:
        t0 = time.time()
        try:
            results[name] = runners[name]()
        except Exception:  # a failing section is reported, the others still run
            results[name] = dict(passed=False, error=traceback.format_exc())
        results[name]['seconds'] = round(time.time() - t0, 1)
        print(f"[gpu_check] {name}: {'passed' if results[name]['passed'] else 'FAILED'} "
              f"({results[name]['seconds']} s)", flush=True)
        complete = len(results) == len(sections)
        report = dict(profile=profile, machine=machine, sections=results, complete=complete,
                      passed=complete and all(s['passed'] for s in results.values()),
                      elapsed_s=time.time() - start)
        atomic_write(out_base + '.md', summary_markdown(report).encode())
        atomic_write(out_base + '.json', json.dumps(report, indent=1, default=str).encode())
    return report
