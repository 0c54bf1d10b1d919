# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The report: headline keys from the cases, machine description, markdown,
chart, and atomic writing of ``FILE.json`` / ``FILE.md`` / ``FILE.png``."""
import io
import json
import os
import os.path as osp
import platform
import tempfile
from typing import Dict, List, Tuple

import torch

from .harness import bootstrap_interval, geomean, round_ratios
from .profiles import DESCRIPTIONS, KEY_SOURCES


def headline_ratios(cases: List[dict]) -> Tuple[Dict[str, float], Dict[str, dict]]:
    """The headline keys (geometric means over their cases) and, per key,
    the per-case ratios, the same aggregate of the ratios of minima and of
    medians and, for time keys whose rounds were kept, ``interval``: the 95%
    bootstrap interval over the rounds (:func:`~.harness.bootstrap_interval`)."""
    keys, details = {}, {}
    for key, (family, mode, pair, field) in KEY_SOURCES.items():
        chosen = [c for c in cases if c['family'] == family and c['mode'] == mode
                  and pair in c.get(field, {})]
        if not chosen:
            continue
        keys[key] = geomean([c[field][pair] for c in chosen])
        timing = field == 'ratios'
        details[key] = dict(
            pair=pair, mode=mode, measure='time' if timing else 'peak training memory',
            per_case={c['case']: round(c[field][pair], 4) for c in chosen},
            of_minima=geomean([c['ratios_of_minima' if timing else field][pair] for c in chosen]),
            of_medians=geomean([c['ratios_of_medians' if timing else field][pair]
                                for c in chosen]))
        rounds = [round_ratios(c, pair) for c in chosen] if timing else [None]
        if all(rounds):
            details[key]['interval'] = list(bootstrap_interval(rounds))
    return keys, details


def machine_info(device: torch.device) -> dict:
    """CPU / GPU, threads, library versions and the relevant environment."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(cpu=cpu, cpu_count=os.cpu_count(), threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(),
                device=str(device), mkldnn=torch.backends.mkldnn.is_available())
    try:
        info['affinity'] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        pass
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
        info['cuda'] = torch.version.cuda
    for lib in ('mmcv', 'mmengine', 'mmpretrain', 'timm'):
        try:
            info[lib] = __import__(lib).__version__
        except ImportError:  # pragma: no cover
            pass
    from mm_efficientconv.layers.batch_norm_act import fused_batch_norm_act_available
    from mm_efficientconv.layers.doconv_compose import fused_compose_available

    # whether DO-Conv's training-time composition and MixNet's training BatchNorm + activation
    # run the compiled CPU ops (setup.py builds them)
    info['doconv_fused_compose'] = device.type == 'cpu' and fused_compose_available()
    info['fused_batch_norm_act'] = device.type == 'cpu' and fused_batch_norm_act_available()
    info['env'] = {k: os.environ[k] for k in ('MMEFF_WITH_OPS', 'MMEFF_FUSED_BN_ACT',
                                              'OMP_NUM_THREADS', 'OMP_WAIT_POLICY',
                                              'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_',
                                              'LD_PRELOAD') if k in os.environ}
    return info


def atomic_write(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same
    directory and ``os.replace`` (never a half-written file)."""
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + osp.basename(path), suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.unlink(tmp)
        raise


def _mem(v) -> str:
    return '-' if v is None else f'{v:.1f}'


def _key_row(report: dict, key: str, target) -> str:
    detail = report['key_details'][key]
    per_case = ', '.join(f'{v:.3f}' for v in detail['per_case'].values())
    met = '-' if target is None else 'yes' if report['met'][key] else '**no**'
    target = '-' if target is None else f'{target:.2f}'
    measured = f'{report[key]:.3f}' + (' ({:.3f}–{:.3f})'.format(*detail['interval'])
                                       if 'interval' in detail else '')
    return (f"| `{key}` | {measured} | {target} | {met} | {per_case} | "
            f"{detail['of_minima']:.3f} | {DESCRIPTIONS[key]} |")


def to_markdown(report: dict) -> str:
    """The report as markdown tables."""
    m = report['machine']
    lines = [
        f"# Benchmark ({report['profile']}, {m['device']})", '',
        f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}"
        + (f", {m['gpu']}" if 'gpu' in m else '')
        + f"; allocator: {report['settings']['malloc']}"
        + f"; DO-Conv fused CPU composition: {'yes' if m.get('doconv_fused_compose') else 'no'}"
        + f"; fused CPU BatchNorm + activation: {'yes' if m.get('fused_batch_norm_act') else 'no'}"
        + f"; load average {report['loadavg_before']} -> {report['loadavg_after']}; "
        f"{report['elapsed_s']:.0f} s.", '',
        'Ratios are candidate / baseline (lower is better): median of the per-round ratios of '
        'interleaved runs; a ratio over several shapes is their geometric mean; in brackets the '
        "95% bootstrap interval over the run's rounds. Peak memory: "
        f"{report['memory_method']}.", '',
        '## Targets', '',
        '| key | measured | target | met | per shape | ratio of minima | what |',
        '|---|---|---|---|---|---|---|'
    ]
    for key, target in report['targets'].items():
        lines.append(_key_row(report, key, target))
    for key in report.get('reported', {}):
        lines.append(_key_row(report, key, None))
    lines += ['', '## Cases', '',
              '| family | case | input | mode | candidate | cand. ms | baseline | base. ms | '
              'ratio | cand. MiB | base. MiB | repeats |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|']
    for case in report['cases']:
        res = case['results']
        for pair, ratio in case['ratios'].items():
            if ' cl/nchw' in pair or pair == 'ours best/timm best':
                continue
            cand, base = case['pairs'][pair]
            lines.append(
                f"| {case['family']} | {case['case']} | {'x'.join(map(str, case['shape']))} | "
                f"{case['mode']} | {cand} | {res[cand]['median_ms']:.2f} | {base} | "
                f"{res[base]['median_ms']:.2f} | {ratio:.3f} | "
                f"{_mem(res[cand].get('peak_mem_mb'))} | {_mem(res[base].get('peak_mem_mb'))} | "
                f"{case['repeats']}x{case['inner']} |")
    train = [c for c in report['cases'] if c['mode'] == 'train_step']
    if train:
        lines += ['', '## Training steps: memory and losses', '',
                  'Peak training memory = parameters + buffers + optimiser state + the peak the '
                  'step allocates above them.', '',
                  '| case | model | ms | persistent MiB | step peak MiB | training MiB | '
                  'last losses |', '|---|---|---|---|---|---|---|']
        for case in train:
            for name, res in case['results'].items():
                losses = ', '.join(f'{k}={v:.4g}' for k, v in case['losses'][name].items()
                                   if k.startswith('loss'))
                lines.append(f"| {case['case']} | {name} | {res['median_ms']:.1f} | "
                             f"{_mem(res.get('persistent_mb'))} | {_mem(res.get('peak_mem_mb'))} "
                             f"| {_mem(res.get('train_mem_mb'))} | {losses} |")
    lines += ['', '## Channels-last / NCHW (inference)', '',
              '| model | NCHW ms | channels-last ms | CL / NCHW |', '|---|---|---|---|']
    for row in report['channels_last']:
        lines.append(f"| {row['model']} | {row['nchw_ms']:.2f} | {row['cl_ms']:.2f} | "
                     f"{row['cl_over_nchw']:.3f} |")
    lines += ['', '## MixConv fused / split', '',
              '| case | mode | split ms | fused ms | fused / split |', '|---|---|---|---|---|']
    for case in report['mixconv_fused_vs_split']:
        res = case['results']
        lines.append(f"| {case['case']} | {case['mode']} | {res['split']['median_ms']:.3f} | "
                     f"{res['fused']['median_ms']:.3f} | {case['ratios']['fused/split']:.3f} |")
    return '\n'.join(lines) + '\n'


def to_png(report: dict) -> bytes:
    """A chart: the headline ratios against their targets, and the per-layer
    training ratios."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = list(report['targets']) + list(report.get('reported', {}))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw=dict(width_ratios=[1, 1.3]))
    ax = axes[0]
    values = [report[k] for k in keys]
    colors = ['tab:grey' if k not in report['met'] else
              'tab:green' if report['met'][k] else 'tab:red' for k in keys]
    ax.barh(range(len(keys)), values, color=colors)
    marked = [(i, report['targets'][k]) for i, k in enumerate(keys) if k in report['targets']]
    ax.scatter([t for _, t in marked], [i for i, _ in marked], marker='|', s=400,
               color='black', label='target', zorder=3)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(keys, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color='grey', lw=0.8, ls='--')
    ax.set_xlabel('candidate / baseline (lower is better; grey: no target)')
    ax.set_title('headline ratios')
    ax.legend(loc='lower right', fontsize=8)
    ax = axes[1]
    labels, vals = [], []
    for case in report['cases']:
        for pair, ratio in case['ratios'].items():
            if case['family'] in ('doconv', 'mixconv', 'bsconvu') and case['mode'] == 'train' \
                    and pair in ('doconv/conv', 'mixconv/timm', 'bsconvu/reference'):
                labels.append(f"{case['case']}")
                vals.append(ratio)
    ax.barh(range(len(vals)), vals, color='tab:blue')
    ax.set_yticks(range(len(vals)))
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()
    ax.axvline(1.0, color='grey', lw=0.8, ls='--')
    ax.set_xlabel('forward+backward, candidate / baseline')
    ax.set_title('per-layer training ratios')
    fig.suptitle(f"{report['profile']} benchmark on {report['machine']['device']}, "
                 f"{report['machine']['threads']} threads", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(report: dict, out: str) -> None:
    """Writes ``out`` (JSON) and, beside it, ``.md`` and ``.png``, each
    atomically (the JSON last)."""
    base = osp.splitext(out)[0]
    atomic_write(base + '.md', to_markdown(report).encode())
    atomic_write(base + '.png', to_png(report))
    atomic_write(out, json.dumps(report, indent=1).encode())
