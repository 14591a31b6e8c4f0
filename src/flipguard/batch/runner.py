"""Map a job over many checkpoints as Ray tasks, writing each result once.

    from flipguard.batch import Job, run_batch
    result = run_batch(["a", "b", "org/name"], Job("scan"), "out", workers=2)

The driver (this process) resolves the inputs, skips those whose result is already in
``<out>/results.jsonl`` (same path, same fingerprint, same job), submits the rest as Ray tasks
(:func:`flipguard.batch.jobs.run_item`, retried by Ray when its worker dies), and as each task
returns writes its report and then its result line (see :mod:`flipguard.batch.ledger`). A bad
checkpoint is a result with its sentence; the batch goes on. Without ``ray_address`` a local Ray
with ``workers`` CPUs is started and shut down; a Ray session already open in this process is
used as it is. On a cluster every path (inputs, the hub cache, ``out``) must be the same on
every node: a shared filesystem.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

from flipguard import console
from flipguard.batch.inputs import Item, resolve_inputs
from flipguard.batch.jobs import REPORTS_DIR, Job, run_item
from flipguard.batch.ledger import SUMMARY_FILE, Ledger, locked
from flipguard.batch.results import BatchResult
from flipguard.cli.output import emit
from flipguard.errors import INPUT_ERROR, FlipGuardError, UsageError

MAX_RETRIES = 3  # times Ray reruns a task whose worker died (not a task that raised)
Work = Callable[[str, str, Job, str], dict]  # (path, name, job, out) -> result line: run_item's shape


def batch(
    inputs: list[str | PathLike],
    out: str | PathLike,
    job: Job | str = "scan",
    schemes: list[str] | str | None = None,
    alpha: float | None = None,
    policy: str | None = None,
    params: dict | None = None,
    depth: float | None = None,
    skip_modules: list[str] | None = None,
    load_dtype: str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    max_retries: int = MAX_RETRIES,
    progress: bool = False,
    verbose: bool = False,
) -> BatchResult:
    """Scan or defend every checkpoint of ``inputs`` on Ray; results under ``out`` (see :func:`run_batch`).

    ``job``: "scan" or "defend" with the options that follow (as :class:`Job` takes them:
    ``schemes``, scan's ``alpha``, defend's ``policy``/``params``/``depth``, and both's
    ``skip_modules``/``load_dtype`` by name), or a ready :class:`Job` (then give no option).
    """
    options = dict(schemes=schemes, alpha=alpha, policy=policy, params=params, depth=depth,
                   skip_modules=skip_modules, load_dtype=load_dtype)
    if isinstance(job, Job):
        if any(v is not None for v in options.values()):
            raise UsageError("pass the options inside the Job, or a job name with the options, not both.")
    else:
        if isinstance(schemes, str):
            options["schemes"] = schemes.split(",")
        options["schemes"] = tuple(options["schemes"]) if options["schemes"] is not None else None
        options["skip_modules"] = tuple(skip_modules) if skip_modules is not None else None
        options["params"] = params or {}
        job = Job(kind=job, **options)
    return run_batch(inputs, job, out, workers=workers, ray_address=ray_address, max_retries=max_retries,
                     progress=progress, verbose=verbose)


def run_batch(
    inputs: list[str | PathLike],
    job: Job,
    out: str | PathLike,
    workers: int | None = None,
    ray_address: str | None = None,
    max_retries: int = MAX_RETRIES,
    progress: bool = False,
    verbose: bool = False,
    work: Work = run_item,
) -> BatchResult:
    """Run ``job`` on every checkpoint of ``inputs`` (directories or repo ids in the local hub
    cache) as Ray tasks; write ``<out>/results.jsonl`` and ``<out>/summary.json``.

    ``workers``: CPUs of the local Ray this starts (default: all of this machine's); ignored with
    ``ray_address`` (an existing cluster: "auto", or "host:port") or when this process already has
    a Ray session. ``max_retries``: times a task is rerun when its worker dies. ``progress``: a
    bar (checkpoints done) on FlipGuard's stderr. ``verbose``: let Ray's own logs through.
    ``work``: the function run per checkpoint (default :func:`run_item`; tests wrap it).
    Raises UsageError for bad options, FlipGuardError when Ray is missing or unreachable or
    another batch holds ``out``; a bad checkpoint is a result, not an exception.
    """
    start = time.perf_counter()
    if isinstance(inputs, (str, PathLike)):
        inputs = [inputs]
    if not inputs:
        raise UsageError("no checkpoint given; pass model directories or repo ids (or --from FILE).")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise UsageError(f"workers must be a whole number of at least 1, got {workers!r}.")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise UsageError(f"max_retries must be a whole number of at least 0, got {max_retries!r}.")
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} is a file; pass a folder (new, or one an earlier batch wrote).")
    items, duplicates = _distinct(resolve_inputs([str(i) for i in inputs]), job.hash)
    _check_outside(out.resolve(), items)  # before anything is written
    with locked(out):
        ledger = Ledger(out)
        keys = [item.key(job.hash) for item in items]
        lines = {key: ledger.done[key] for key in keys if key in ledger.done}  # key -> result line
        done_before = len(lines)
        pending: list[Item] = []
        for item, key in zip(items, keys):
            if key in lines:
                continue
            if item.error:  # resolved to nothing: a result of its own, no task
                outcome = {"status": "error", "exit_code": INPUT_ERROR, "error": item.error, "seconds": 0.0}
                lines[key] = _record(ledger, out, item, job, outcome)
            else:
                pending.append(item)
        with console.progress_bar("batch", total=len(items), enabled=progress, unit="ckpt") as bar:
            bar.update(len(items) - len(pending))
            if pending:
                with ray_session(ray_address, workers, verbose) as ray:
                    for item, outcome in _run_tasks(ray, pending, job, out, max_retries, work):
                        failed = outcome["status"] == "failed"
                        lines[item.key(job.hash)] = outcome if failed else _record(ledger, out, item, job, outcome)
                        bar.update(1)
        result = BatchResult(
            output=str(out),
            job={**job.to_dict(), "hash": job.hash},
            lines=[lines[key] for key in keys],
            ran=len(pending),
            done_before=done_before,
            duplicates=duplicates,
        )
        result.seconds = time.perf_counter() - start
        emit(result.to_json(), str(out / SUMMARY_FILE))
    return result


def _check_outside(out: Path, items: list[Item]) -> None:
    """UsageError when ``out`` is an input checkpoint or inside one: the batch would write into an
    input (and change its fingerprint, so that a re-run would redo it)."""
    for item in items:
        path = Path(item.path) if item.path else None
        if path is not None and (out == path or path in out.parents):
            raise UsageError(f"output folder {out} is {'' if out == path else 'inside '}the input checkpoint "
                             f"{path}; choose an output folder outside every input.")


def _distinct(items: list[Item], job_hash: str) -> tuple[list[Item], list[str]]:
    """The items with one per key (the first input naming a checkpoint), and the inputs dropped."""
    seen, kept, dropped = set(), [], []
    for item in items:
        key = item.key(job_hash)
        (dropped.append(item.input) if key in seen else kept.append(item))
        seen.add(key)
    return kept, dropped


def _record(ledger: Ledger, out: Path, item: Item, job: Job, outcome: dict) -> dict:
    """Write an item's report (a scan's) and then its result line; return the line."""
    outcome = dict(outcome)
    report_json = outcome.pop("report_json", None)
    line = {"key": item.key(job.hash), "input": item.input, "path": item.path, "fingerprint": item.fingerprint,
            "name": item.name, "job": job.hash, "kind": job.kind, **outcome}
    if report_json is not None:
        line["report"] = f"{REPORTS_DIR}/{item.name}.json"
        emit(report_json, str(out / line["report"]))  # as `flipguard scan -f json -o FILE` writes it
    ledger.append(line)
    return line


def _run_tasks(ray, items: list[Item], job: Job, out: Path, max_retries: int,
               work: Work) -> Iterator[tuple[Item, dict]]:
    """Run one task per item, a window of them in flight at a time (twice the cluster's CPUs: each
    worker has its next task waiting, and results wait in Ray's object store only briefly); yield
    ``(item, result line)`` as each finishes, in any order. A task that raised, or whose worker
    died ``max_retries + 1`` times, yields a "failed" line."""
    task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(work)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    queue = iter(items)
    running: dict = {}

    def submit(count: int) -> None:
        for item in itertools.islice(queue, count):
            running[task.remote(item.path, item.name, job, str(out))] = item

    submit(window)
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            for ref in ready:
                item = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as error:
                    outcome = _failed(item, job, error, max_retries)
                submit(1)
                yield item, outcome
    finally:  # interrupted: stop what is still running (nothing half-written is kept)
        for ref in running:
            ray.cancel(ref, force=True)


def _failed(item: Item, job: Job, error: Exception, max_retries: int) -> dict:
    """The result line of a task that did not return: one sentence, status "failed"."""
    import ray

    from flipguard.errors import INTERNAL_ERROR

    if isinstance(error, ray.exceptions.RayTaskError):  # the function raised: a bug in FlipGuard
        cause = getattr(error, "cause", None) or error
        text = str(cause).strip().splitlines()
        reason = (f"internal error: {type(cause).__name__}: {text[0][:300] if text else 'no message'} "
                  "(a bug in FlipGuard: rerun the checkpoint alone with `flipguard --debug` and report it).")
    else:  # its worker died (killed, out of memory, node lost) once more than Ray retries
        reason = (f"its Ray worker died {max_retries + 1} time(s) ({type(error).__name__}), so it was given up; "
                  "check the node's memory, or rerun the batch to try it again.")
    return {"key": item.key(job.hash), "input": item.input, "path": item.path, "name": item.name, "status": "failed",
            "exit_code": INTERNAL_ERROR, "error": reason}


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-node mode, on 127.0.0.1 only


@contextmanager
def ray_session(address: str | None, workers: int | None, verbose: bool) -> Iterator[object]:
    """The ``ray`` module with a session open: this process's own if it has one (left open),
    else a new one, shut down on the way out: the cluster at ``address``, or a local Ray with
    ``workers`` CPUs that listens on the loopback address only (``RAY_ADDRESS`` is not followed:
    a cluster is named with ``address``). Ray's own logs stay out of the terminal unless ``verbose``."""
    previous = {name: os.environ.get(name) for name in (LOOPBACK_ENV, "RAY_USAGE_STATS_ENABLED")}
    if not address and "ray" not in sys.modules:  # read when ray is imported
        os.environ.setdefault(LOOPBACK_ENV, "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report, no prompt about it
    try:
        import ray
    except ImportError:
        _restore(previous)
        raise FlipGuardError("flipguard batch runs on Ray, which is not installed; pip install 'flipguard[ray]'.") \
            from None
    if ray.is_initialized():
        _restore(previous)
        yield ray
        return
    options = dict(log_to_driver=verbose, include_dashboard=False,
                   logging_level=logging.INFO if verbose else logging.ERROR)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(address="local", num_cpus=workers or os.cpu_count() or 1, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        _restore(previous)
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise FlipGuardError(f"could not start {where} ({_first_line(error)}); check --ray-address, or leave it "
                             "out to run on this machine.") from None
    try:
        yield ray
    finally:
        ray.shutdown()
        _restore(previous)


def _restore(previous: dict[str, str | None]) -> None:
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
