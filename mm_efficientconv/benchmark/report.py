# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The report: headline keys from the cases, machine description, the
combination of several runs, markdown, chart, and atomic writing of
``FILE.json`` / ``FILE.md`` / ``FILE.png``."""
import copy
import io
import json
import os
import os.path as osp
import platform
import statistics
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .harness import (add_best_format_ratio, add_pair_ratio, bootstrap_interval, geomean, log,
                      round_ratios, timing_stats)
from .profiles import DESCRIPTIONS, KEY_SOURCES, targets_for


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


def summarise(cases: List[dict], device: str) -> dict:
    """The report's fields that follow from ``cases`` on ``device``
    (``'cpu'`` / ``'cuda'``): every key at the top level, ``targets`` (the
    device's, for the keys measured), ``reported`` (keys without a target
    there), ``met`` and ``key_details``."""
    keys, details = headline_ratios(cases)
    targets = {k: v for k, v in targets_for(device).items() if k in keys}
    reported = {k: v for k, v in keys.items() if k not in targets}
    return dict(**{k: keys[k] for k in targets}, **reported, targets=targets, reported=reported,
                met={k: bool(keys[k] <= t) for k, t in targets.items()}, key_details=details)


def log_summary(report: dict) -> None:
    """One progress-log line per key: value, interval, target and verdict."""

    def interval(key):
        bounds = report['key_details'][key].get('interval')
        return ' [{:.3f}, {:.3f}]'.format(*bounds) if bounds else ''

    for key, target in report['targets'].items():
        log(f"{key:38s} {report[key]:.3f}{interval(key)} (target <= {target}) "
            f"{'met' if report['met'][key] else 'MISSED'}")
    for key, value in report['reported'].items():
        log(f'{key:38s} {value:.3f}{interval(key)} (no target)')


#: What must be equal in the ``machine`` of reports that are combined.
MACHINE_FIELDS = ('device', 'cpu', 'threads', 'gpu', 'torch')


def _case_id(case: dict) -> tuple:
    return case['family'], case['case'], case['mode'], tuple(case['shape'])


def _median_or_none(values: list) -> Optional[float]:
    return None if any(v is None for v in values) else statistics.median(values)


def _combine_case(parts: List[dict]) -> dict:
    """One case from the same case of several runs: the rounds of every step
    concatenated in run order (a round keeps its pair), the statistics and
    ratios recomputed from them, the faster memory format chosen again;
    memory figures are the median over the runs."""
    out = copy.deepcopy(parts[0])
    for name, res in out['results'].items():
        res.update(timing_stats([t for p in parts for t in p['results'][name]['raw_ms']]))
        for field in ('peak_mem_mb', 'persistent_mb', 'train_mem_mb'):
            if field in res:
                res[field] = _median_or_none([p['results'][name].get(field) for p in parts])
    best_pair = out.get('best_format_pair')
    if best_pair is None and 'best_format' in out:  # a report written before best_format_pair
        best_pair = '{} best/{} best'.format(*out['best_format'])
    for field in ('ratios', 'ratios_of_medians', 'ratios_of_minima'):
        out[field] = {}
    for pair, (cand, base) in list(out['pairs'].items()):
        if pair != best_pair:
            add_pair_ratio(out, pair, cand, base)
    if best_pair is not None:
        add_best_format_ratio(out, list(out['best_format']), best_pair)
    for field in ('memory_ratios', 'step_memory_ratios'):
        if field in out:
            out[field] = {k: statistics.median(p[field][k] for p in parts) for k in out[field]}
    if 'max_abs_diff' in out:
        out['max_abs_diff'] = {k: max(p['max_abs_diff'][k] for p in parts)
                               for k in out['max_abs_diff']}
    if 'finite_losses' in out:
        out['finite_losses'] = all(p['finite_losses'] for p in parts)
        out['losses'] = parts[-1]['losses']
    out['repeats'] = sum(p['repeats'] for p in parts)
    inner = sorted({p['inner'] for p in parts})
    out['inner'] = inner[0] if len(inner) == 1 else '/'.join(map(str, inner))
    out['runs'] = len(parts)
    return out


def _combine_lists(lists: List[List[dict]], what: str) -> List[dict]:
    ids = [[_case_id(c) for c in cases] for cases in lists]
    for i, other in enumerate(ids[1:], 1):
        if sorted(other) != sorted(ids[0]):
            missing = sorted(set(ids[0]) ^ set(other))
            raise ValueError(f'reports[{i}] does not have the {what} of reports[0] (differing: '
                             f'{missing}); combine runs of the same suites (same --only, no '
                             'failed suite)')
    by_id = [dict(zip(i, cases)) for i, cases in zip(ids, lists)]
    return [_combine_case([cases[key] for cases in by_id]) for key in ids[0]]


def _combine_rows(lists: List[List[dict]]) -> List[dict]:
    """Channels-last rows: each number the median over the runs."""
    rows = []
    for row in lists[0]:
        same = [r for rows_ in lists for r in rows_
                if (r['model'], r['mode']) == (row['model'], row['mode'])]
        rows.append({k: statistics.median(r[k] for r in same) if isinstance(v, float) else v
                     for k, v in row.items()})
    return rows


def combine_reports(reports: Sequence[dict], sources: Optional[Sequence[str]] = None) -> dict:
    """One report from several runs of the same profile on one machine.

    Each case's rounds are pooled (the figure of a case is then the median
    of the per-round ratios of all runs, and its bootstrap interval resamples
    all those rounds); memory figures are the median over the runs. The keys,
    ``met`` and the tables follow from the pooled cases as in a single run.
    ``runs`` keeps every run's own keys and verdicts.

    Args:
        reports (Sequence[dict]): Reports of :func:`~.runner.run_benchmark`
            (two or more) with equal ``profile``, ``settings`` and cases, from
            one machine (:data:`MACHINE_FIELDS` equal).
        sources (Sequence[str], optional): Where each report came from (file
            names), recorded in ``runs``. Defaults to None.

    Returns:
        dict: The combined report.
    """
    reports = list(reports)
    if len(reports) < 2:
        raise ValueError(f'reports: combining needs two or more reports, got {len(reports)}')
    if sources is not None and len(sources) != len(reports):
        raise ValueError(f'sources: one per report expected, got {len(sources)} for '
                         f'{len(reports)} reports')
    needed = ('profile', 'settings', 'machine', 'cases', 'targets', 'met', 'elapsed_s')
    for i, rep in enumerate(reports):
        missing = [k for k in needed if k not in rep] if isinstance(rep, dict) else list(needed)
        if missing:
            raise ValueError(f'reports[{i}] is not a benchmark report (no {missing})')
    first = reports[0]

    def identity(rep: dict) -> dict:
        machine = {k: rep['machine'].get(k) for k in MACHINE_FIELDS}
        return dict(profile=rep['profile'], settings=rep['settings'], **machine)

    expected = identity(first)
    for i, rep in enumerate(reports[1:], 1):
        for field, value in identity(rep).items():
            if value != expected[field]:
                raise ValueError(f'reports[{i}] has {field} {value!r}, reports[0] '
                                 f'{expected[field]!r}: only runs of one profile with the same '
                                 'settings on one machine can be combined')
    device = first['machine']['device']
    cases = _combine_lists([r['cases'] for r in reports], 'cases')
    suites = {s for r in reports for s in r.get('suite_seconds', {})}
    combined = dict(
        profile=first['profile'],
        machine=first['machine'],
        memory_method=first['memory_method'],
        ratio_method=first['ratio_method'] + f'; {len(reports)} runs combined: the rounds of '
        'every case pooled, memory figures the median over the runs',
        settings=first['settings'],
        **summarise(cases, 'cuda' if device.startswith('cuda') else 'cpu'),
        cases=cases,
        channels_last=_combine_rows([r.get('channels_last', []) for r in reports]),
        mixconv_fused_vs_split=_combine_lists(
            [r.get('mixconv_fused_vs_split', []) for r in reports], 'MixConv fused/split cases'),
        suite_seconds={s: round(sum(r['suite_seconds'].get(s, 0.0) for r in reports), 1)
                       for s in sorted(suites)},
        suite_errors={s: e for r in reports for s, e in r.get('suite_errors', {}).items()},
        loadavg_before=first['loadavg_before'],
        loadavg_after=reports[-1]['loadavg_after'],
        elapsed_s=sum(r['elapsed_s'] for r in reports),
        runs=[dict(source=None if sources is None else sources[i], elapsed_s=r['elapsed_s'],
                   loadavg_before=r['loadavg_before'], keys={k: r[k] for k in r['targets']},
                   reported=dict(r.get('reported', {})), met=dict(r['met']))
              for i, r in enumerate(reports)],
    )
    return combined


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
    runs = report.get('runs', [])
    lines = [
        f"# Benchmark ({report['profile']}, {m['device']})", '',
        f"{m['cpu']}, {m['threads']} threads, torch {m['torch']}"
        + (f", {m['gpu']}" if 'gpu' in m else '')
        + f"; allocator: {report['settings']['malloc']}"
        + f"; DO-Conv fused CPU composition: {'yes' if m.get('doconv_fused_compose') else 'no'}"
        + f"; fused CPU BatchNorm + activation: {'yes' if m.get('fused_batch_norm_act') else 'no'}"
        + f"; load average {report['loadavg_before']} -> {report['loadavg_after']}; "
        f"{report['elapsed_s']:.0f} s" + (f" ({len(runs)} runs)." if runs else '.'), '',
        'Ratios are candidate / baseline (lower is better): median of the per-round ratios of '
        'interleaved runs; a ratio over several shapes is their geometric mean; in brackets the '
        "95% bootstrap interval over the rounds. Peak memory: "
        f"{report['memory_method']}."
        + (f' **{len(runs)} runs combined**: the rounds of every case pooled, memory figures the '
           'median over the runs; each run on its own under "Runs".' if runs else ''), '',
        '## Targets', '',
        '| key | measured | target | met | per shape | ratio of minima | what |',
        '|---|---|---|---|---|---|---|'
    ]
    for key, target in report['targets'].items():
        lines.append(_key_row(report, key, target))
    for key in report.get('reported', {}):
        lines.append(_key_row(report, key, None))
    if runs:
        keys = list(report['targets']) + list(report.get('reported', {}))
        lines += ['', '## Runs', '', '| key | ' + ' | '.join(
            f'run {i + 1}' for i in range(len(runs))) + ' | combined |',
                  '|---' * (len(runs) + 2) + '|']
        for key in keys:
            cells = []
            for run in runs:
                value = run['keys'].get(key, run['reported'].get(key))
                missed = key in run['met'] and not run['met'][key]
                cells.append('-' if value is None else f'**{value:.3f}**' if missed
                             else f'{value:.3f}')
            lines.append(f"| `{key}` | " + ' | '.join(cells) + f' | {report[key]:.3f} |')
        lines += ['', 'Bold: missed its target in that run. Sources: ' + ', '.join(
            f"run {i + 1}" + (f" `{run['source']}`" if run['source'] else '')
            + f" ({run['elapsed_s']:.0f} s)"
            for i, run in enumerate(runs)) + '.']
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
    runs = len(report.get('runs', []))
    fig.suptitle(f"{report['profile']} benchmark on {report['machine']['device']}, "
                 f"{report['machine']['threads']} threads"
                 + (f', {runs} runs combined' if runs else ''), fontsize=10)
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
