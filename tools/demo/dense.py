# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""The dense part of the demo: detection and segmentation on digit scenes.

For each model: train its config in ``configs/demo`` with ``tools/train.py``
(a subprocess, as a user would; progress from its log), read the final
held-out metric, fold the checkpoint with ``tools/deploy/fold_checkpoint.py``
and evaluate the folded checkpoint with ``tools/demo/evaluate_checkpoint.py``:
DO-Conv models in their plain twin config in a process that never imports
mm_efficientconv (``value_folded_stock``), SSDLite MixNet-S in its own config
in deploy form (``value_folded``). Plain models have nothing to fold.
``run_models`` runs these pipelines one after the other or several at once
(in the order that should end soonest, ``start_order``), the rows always in
the requested order.

Used by ``tools/demo/run_demo.py --tasks det seg``.
"""
import itertools
import json
import os
import os.path as osp
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from typing import Callable, Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(REPO, 'tools', 'train.py')
FOLD = osp.join(REPO, 'tools', 'deploy', 'fold_checkpoint.py')
EVALUATE = osp.join(REPO, 'tools', 'demo', 'evaluate_checkpoint.py')
SCENES_SEED = 0  # the scenes are the same for every --seed; --seed changes the training runs

_DEMO = 'configs/demo/'
# name -> task, config, how the checkpoint is folded and evaluated, floor of the held-out metric,
# seconds of its whole pipeline (training, folding, evaluation) measured on one thread in the
# whole demo (shared cores), from which ``start_order`` plans the pipelines
MODELS: Dict[str, dict] = {
    'faster-rcnn_r18-doconv': dict(
        task='det', config=_DEMO + 'faster-rcnn_r18-doconv_fpn_digit-scenes.py',
        stock_config=_DEMO + 'faster-rcnn_r18_fpn_digit-scenes.py', floor=0.80,
        expected_seconds=220),
    'faster-rcnn_r18-plain': dict(
        task='det', config=_DEMO + 'faster-rcnn_r18_fpn_digit-scenes.py', floor=0.80,
        expected_seconds=175),
    'ssdlite_mixnet-s': dict(
        task='det', config=_DEMO + 'ssdlite_mixnet-s_digit-scenes.py', deployed=True,
        floor=0.60, expected_seconds=250),
    'deeplabv3_r18-doconv': dict(
        task='seg', config=_DEMO + 'deeplabv3_r18-d8-doconv_digit-scenes.py',
        stock_config=_DEMO + 'deeplabv3_r18-d8_digit-scenes.py', floor=0.60,
        expected_seconds=550),
    'deeplabv3_r18-plain': dict(
        task='seg', config=_DEMO + 'deeplabv3_r18-d8_digit-scenes.py', floor=0.60,
        expected_seconds=460),
}
METRICS = {'det': 'bbox_mAP_50', 'seg': 'mIoU'}


def metric_value(task: str, metrics: Dict[str, float]) -> Dict[str, Optional[float]]:
    """The headline metric as a fraction in [0, 1] (plus COCO mAP for det)."""
    if task == 'det':
        return dict(value=metrics.get('coco/bbox_mAP_50'), bbox_mAP=metrics.get('coco/bbox_mAP'))
    miou = metrics.get('mIoU')
    return dict(value=None if miou is None else round(miou / 100.0, 4))  # IoUMetric: percent


def data_options(task: str, data_root: str) -> List[str]:
    """``--cfg-options`` pointing a demo config at ``data_root``."""
    root = data_root.rstrip('/') + '/'
    opts = [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    if task == 'det':
        ann = root + 'annotations/instances_val.json'
        opts += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    return opts


def schedule_options(cfg, iters: int) -> List[str]:
    """``--cfg-options`` for a smoke-test schedule of ``iters`` iterations."""
    if 'max_iters' in cfg.train_cfg:
        return [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                f'default_hooks.checkpoint.interval={iters}']
    batch = cfg.train_dataloader.batch_size
    return ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
            f'train_dataloader.dataset.indices={iters * batch}']


_PRINT_LOCK = threading.Lock()
# Two pipelines reading their configs at once failed in pkg_resources.get_distribution ("Expected
# str, Requirement, or Distribution"), called by mmengine for the `mmseg::` base of a config
_CONFIG_LOCK = threading.Lock()


def say(line: str) -> None:
    """Prints ``line`` whole (concurrent pipelines print from several threads)."""
    with _PRINT_LOCK:
        sys.stdout.write(line + '\n')
        sys.stdout.flush()


def progress_line(name: str, done: int, total: int, seconds: Optional[float] = None) -> str:
    """``[name] training  30% (150/500 iterations[, 54 s])``: the progress line
    of a model trained beside others (dense pipelines and classification)."""
    took = '' if seconds is None else f', {seconds:.0f} s'
    return f'[{name}] training {100 * done // total:3d}% ({done}/{total} iterations{took})'


class _TrainProgress:
    """Training progress from the ``Epoch(train) [e][i/n]`` / ``Iter(train)
    [i/n]`` lines of mmengine's log: a progress bar, or, when ``name`` is given
    (several models train at once), a ``[name] training 30% ...`` line every
    ``step`` percent."""
    _EPOCH = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]')
    _ITER = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')

    def __init__(self, max_epochs: Optional[int], name: Optional[str] = None, step: int = 10):
        self.max_epochs = max_epochs
        self.name, self.step = name, step
        self.bar = None
        self.done = 0
        self.next_percent = step
        self.start = time.perf_counter()

    def feed(self, line: str) -> None:
        m = self._EPOCH.search(line)
        if m and self.max_epochs:
            epoch, i, n = (int(v) for v in m.groups())
            done, total = (epoch - 1) * n + i, self.max_epochs * n
        else:
            m = self._ITER.search(line)
            if not m:
                return
            done, total = (int(v) for v in m.groups())
        if self.name is not None:
            percent = 100 * done // total
            if percent >= self.next_percent:
                say(progress_line(self.name, done, total, time.perf_counter() - self.start))
                self.next_percent = (percent // self.step + 1) * self.step
            return
        if self.bar is None:
            from mmengine.utils import ProgressBar
            self.bar = ProgressBar(total)
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done

    def close(self) -> None:
        if self.bar is not None:
            sys.stdout.write('\n')
            sys.stdout.flush()


class Stopped(RuntimeError):
    """A pipeline stopped because another one failed."""


def _run(cmd: List[str], log_file: str, env: dict, on_line=None,
         stop: Optional[threading.Event] = None) -> str:
    """Runs ``cmd`` (cwd: the repository), writes its output to ``log_file``
    and returns it; raises with the tail of the output on failure, and
    terminates it, raising ``Stopped``, once ``stop`` is set."""
    lines = []
    with open(log_file, 'w', encoding='utf-8') as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=dict(env, PYTHONUNBUFFERED='1'),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        with proc:
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if on_line is not None:
                    on_line(line)
                if stop is not None and stop.is_set():
                    proc.terminate()
                    raise Stopped(f'{" ".join(cmd[1:3])} stopped (log: {log_file})')
            proc.wait()
    output = ''.join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f'{" ".join(cmd[1:3])} failed (exit code {proc.returncode}; log: '
                           f'{log_file}):\n{output[-4000:]}')
    return output


def _final_val_metrics(work_dir: str) -> Dict[str, float]:
    """The last validation metrics of the newest run in ``work_dir``
    (mmengine's ``<timestamp>/vis_data/scalars.json``)."""
    runs = sorted(d for d in os.listdir(work_dir)
                  if osp.isfile(osp.join(work_dir, d, 'vis_data', 'scalars.json')))
    if not runs:
        raise RuntimeError(f'no vis_data/scalars.json under {work_dir}')
    found = {}
    with open(osp.join(work_dir, runs[-1], 'vis_data', 'scalars.json'), encoding='utf-8') as f:
        for line in f:
            row = json.loads(line)
            if 'coco/bbox_mAP_50' in row or 'mIoU' in row:
                found = row
    return found


def _last_checkpoint(work_dir: str) -> str:
    with open(osp.join(work_dir, 'last_checkpoint'), encoding='utf-8') as f:
        return f.read().strip()


def _parse_fold(output: str) -> dict:
    info = {}
    m = re.search(r'layers folded:\s+(\d+)', output)
    if m:
        info['folded_layers'] = int(m.group(1))
    m = re.search(r'params:\s+([\d,]+) -> ([\d,]+)', output)
    if m:
        info['params'] = int(m.group(1).replace(',', ''))
        info['params_folded'] = int(m.group(2).replace(',', ''))
    m = re.search(r'max \|folded - original\| output: (\S+)', output)
    if m:
        info['fold_max_abs_diff'] = float(m.group(1))
    return info


def _evaluation(output: str) -> dict:
    for line in reversed(output.splitlines()):
        if line.startswith('EVALUATION '):
            return json.loads(line[len('EVALUATION '):])
    raise RuntimeError('evaluate_checkpoint.py printed no EVALUATION line:\n' + output[-3000:])


def run_model(name: str, work_dir: str, data_root: str, seed: int, env: dict,
              iters: Optional[int] = None, log_lines: bool = False,
              stop: Optional[threading.Event] = None) -> dict:
    """Trains, folds and evaluates one dense model; returns its summary row.

    ``log_lines``: training progress as ``[name]`` lines instead of a bar;
    ``stop``: set by another pipeline's failure, ends this one."""
    from mmengine.config import Config
    spec = MODELS[name]
    task, config = spec['task'], spec['config']
    out_dir = osp.join(work_dir, name)
    os.makedirs(out_dir, exist_ok=True)
    with _CONFIG_LOCK:  # see _CONFIG_LOCK
        cfg = Config.fromfile(osp.join(REPO, config), import_custom_modules=False)
    opts = data_options(task, data_root)
    train_opts = opts + [f'randomness.seed={seed}']
    if iters:
        train_opts += schedule_options(cfg, iters)
    max_epochs = None if 'max_iters' in cfg.train_cfg else (1 if iters else
                                                               cfg.train_cfg.max_epochs)
    say(('' if log_lines else '\n') + f'[{name}] training {config} with tools/train.py')
    progress = _TrainProgress(max_epochs, name if log_lines else None)
    start = time.perf_counter()
    _run([sys.executable, TRAIN, config, '--work-dir', out_dir, '--cfg-options'] + train_opts,
         osp.join(out_dir, 'train_output.log'), env, progress.feed, stop)
    train_seconds = time.perf_counter() - start
    progress.close()
    row = dict(model=name, task=task, metric=METRICS[task], config=config, seed=seed)
    row.update(metric_value(task, _final_val_metrics(out_dir)))
    row.update(value_folded_stock=None, value_folded=None, train_seconds=round(train_seconds, 1))

    checkpoint = _last_checkpoint(out_dir)
    if spec.get('stock_config') or spec.get('deployed'):
        deploy_ckpt = osp.join(out_dir, f'{name}_deploy.pth')
        # no --check-stock-config: the evaluation below loads the folded checkpoint strictly into
        # the stock config in a process without the plugin, which is that check and more (it
        # cost ~15 s of start-up per model)
        fold_cmd = [sys.executable, FOLD, config, checkpoint, deploy_ckpt, '--force']
        say(f'[{name}] folding {osp.basename(checkpoint)} with fold_checkpoint.py')
        row.update(_parse_fold(_run(fold_cmd, osp.join(out_dir, 'fold_output.log'), env,
                                    stop=stop)))
        eval_config = spec.get('stock_config') or config
        eval_cmd = [sys.executable, EVALUATE, eval_config, deploy_ckpt, '--work-dir',
                    osp.join(out_dir, 'evaluate_folded'), '--cfg-options'] + opts
        if spec.get('deployed'):
            eval_cmd.insert(4, '--deployed')
        where = 'in its own config (deploy form)' if spec.get('deployed') else \
            f'in {eval_config} without mm_efficientconv'
        say(f'[{name}] evaluating the folded checkpoint {where}')
        report = _evaluation(_run(eval_cmd, osp.join(out_dir, 'evaluate_output.log'), env,
                                  stop=stop))
        folded = metric_value(task, report['metrics'])
        key = 'value_folded' if spec.get('deployed') else 'value_folded_stock'
        row[key] = folded['value']
        if task == 'det':
            row[key.replace('value', 'bbox_mAP')] = folded['bbox_mAP']
        row['imported_mm_efficientconv'] = report['imported_mm_efficientconv']
        if 'mixconv_folded' in report:
            row['mixconv_folded'] = report['mixconv_folded']
    row['checkpoint'] = checkpoint
    return row


def planned_finish(order: List[str], jobs: int,
                   seconds: Optional[Dict[str, float]] = None) -> float:
    """When the last pipeline ends if ``order`` is started on ``jobs`` lanes,
    each model taking the next free lane (``seconds``: default the models'
    ``expected_seconds``)."""
    seconds = seconds or {name: MODELS[name]['expected_seconds'] for name in order}
    lanes = [0.0] * jobs
    for name in order:
        lane = lanes.index(min(lanes))
        lanes[lane] += seconds[name]
    return max(lanes)


def start_order(names: List[str], jobs: int,
                seconds: Optional[Dict[str, float]] = None) -> List[str]:
    """The order in which to start the pipelines on ``jobs`` lanes: the one
    that ends soonest by ``planned_finish`` (longest-first breaks ties, and is
    used as it is for more than 7 models). Longest-first alone can be worse:
    with the demo's five models it leaves the shortest detection model alone
    at the end on one core (720 vs 680 planned seconds in the unit test)."""
    seconds = seconds or {name: MODELS[name]['expected_seconds'] for name in names}
    best = sorted(names, key=lambda name: -seconds[name])
    if len(names) > 7:
        return best
    best_finish = planned_finish(best, jobs, seconds)
    for order in itertools.permutations(best):
        finish = planned_finish(list(order), jobs, seconds)
        if finish < best_finish - 1e-9:
            best, best_finish = list(order), finish
    return best


def _result_line(row: dict) -> str:
    folded = row['value_folded_stock'] if row.get('value_folded_stock') is not None \
        else row.get('value_folded')
    value, folded = ('-' if v is None else f'{v:g}' for v in (row['value'], folded))
    return (f"[{row['model']}] {row['metric']} {value}  folded {folded}  "
            f"({row['train_seconds']:.0f} s training)")


def run_models(names: List[str], work_dir: str, data_root: str, seed: int, env: dict,
               iters: Optional[int] = None, jobs: int = 1,
               run: Callable[..., dict] = run_model) -> List[dict]:
    """Runs the pipeline of each model in ``names`` (``run_model``): one after
    the other with a progress bar (``jobs=1``), or ``jobs`` at a time in
    ``start_order``, with ``[name]`` progress lines. The rows come back in the
    order of ``names`` whatever the finishing order; the first failure stops
    the other pipelines and is raised."""
    if jobs == 1:
        rows = []
        for name in names:
            rows.append(run(name, work_dir, data_root, seed, env, iters))
            say(_result_line(rows[-1]))
        return rows
    stop = threading.Event()

    def pipeline(name):
        if stop.is_set():
            raise Stopped(f'{name}: not started')
        try:
            return run(name, work_dir, data_root, seed, env, iters, log_lines=True, stop=stop)
        except BaseException:
            stop.set()  # before this worker takes the next model; the running ones end at
            raise  # their next output line

    rows = {}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix='dense') as pool:
        # the pool starts them in this order
        futures = {pool.submit(pipeline, name): name for name in start_order(names, jobs)}
        try:
            for future in as_completed(futures):
                rows[futures[future]] = future.result()
                say(_result_line(rows[futures[future]]))
        except BaseException as error:  # a failure, or Ctrl+C here
            stop.set()
            for future in futures:
                future.cancel()
            if isinstance(error, Stopped):  # raise the failure that stopped this one
                wait(futures)
                errors = [f.exception() for f in futures if not f.cancelled()]
                error = next((e for e in errors if e and not isinstance(e, Stopped)), error)
            raise error
    return [rows[name] for name in names]


def check_rows(rows: List[dict], floors: bool = True) -> List[str]:
    """The problems of the dense rows: a folded metric that differs from the
    unfolded one, a stock evaluation that imported the plugin, a metric below
    its floor (when ``floors``)."""
    problems = []
    for row in rows:
        spec = MODELS[row['model']]
        for key in ('value_folded_stock', 'value_folded'):
            if row.get(key) is not None and row[key] != row['value']:
                problems.append(f"{row['model']}: {key} {row[key]} != value {row['value']}")
        if spec.get('stock_config') and row.get('imported_mm_efficientconv') is not False:
            problems.append(f"{row['model']}: the stock evaluation imported mm_efficientconv")
        if floors and (row['value'] is None or row['value'] < spec['floor']):
            problems.append(f"{row['model']}: {row['metric']} {row['value']} below its floor "
                            f"{spec['floor']}")
    return problems
