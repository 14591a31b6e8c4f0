"""Run ``flipguard scan`` and ``flipguard defend`` on mutants, in process, and judge every run.

A run fails when it: raises out of ``main`` (a traceback) or prints "Traceback"; exits with a code
other than 0-3; exits 2 without exactly one sentence ``flipguard <cmd>: error: ...`` on stderr;
runs past its timeout (a hang); leaves an output or a temporary directory behind after an error;
opens a file outside the checkpoint folder (an audit hook sees Python's opens; the sentinel's
access time sees everyone's, safetensors' Rust reader included); exits 0 from defend with an output
that lacks, or changed, a companion file (a silent loss); or ends otherwise than the mutant expects
(``expect``: "error" -> 2, "valid" -> the base's own verdict and a complete defended copy).
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import os
import re
import shutil
import signal
import stat
import sys
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .mutants import INDEX, SENTINEL, SINGLE, Mutant

WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf",
                   "*.msgpack", "*.h5", "*.onnx", "*.onnx_data", "pytorch_model.bin.index.json",
                   "*.msgpack.index.json")
SENTENCE = re.compile(r"^flipguard (scan|defend): error: [^\n]+\.\n$")
COMMANDS = ("scan", "defend")


class Hang(Exception):
    """Raised by the alarm in a run that took longer than its timeout."""


@dataclass
class Run:
    command: str
    code: int | None
    stderr: str
    seconds: float
    failures: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    mutant: Mutant
    runs: list[Run]

    @property
    def failures(self) -> list[str]:
        return [f"{run.command}: {failure}" for run in self.runs for failure in run.failures]


# ----------------------------------------------------------------------------- watching opens

_watch: dict = {"root": None, "allowed": (), "seen": []}


def _audit(event: str, args: tuple) -> None:
    root = _watch["root"]
    if root is None or event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path.startswith(root) and not path.startswith(_watch["allowed"]):
        _watch["seen"].append(path)


_hooked = False


def _install_hook() -> None:
    global _hooked
    if not _hooked:
        sys.addaudithook(_audit)
        _hooked = True


# ----------------------------------------------------------------------------- one run


def call_main(argv: list[str], timeout: float) -> tuple[int | None, str, str, str | None, float]:
    """``flipguard.cli.main(argv)`` with stdout/stderr captured and an alarm after ``timeout`` s.

    Returns (exit code, stdout, stderr, failure or None, seconds)."""
    from flipguard.cli import main

    def alarm(signum, frame):
        raise Hang(f"still running after {timeout:g} s")

    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.perf_counter()
    code, failure = None, None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code if isinstance(stop.code, int) else 2
    except Hang as hang:
        failure = f"hang ({hang})"
    except BaseException as error:  # noqa: BLE001 - the point: anything escaping main is a bug
        failure = "traceback: " + "".join(traceback.format_exception_only(type(error), error)).strip()[:300]
        failure += " at " + _where(error)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue(), failure, time.perf_counter() - start


def _where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    inside = [f for f in frames if "flipguard" in f.filename] or frames
    frame = inside[-1] if inside else None
    return f"{Path(frame.filename).name}:{frame.lineno}" if frame else "?"


def judge_output(command: str, code: int | None, stderr: str, expect: str, base_code: int) -> list[str]:
    failures = []
    if code not in (0, 1, 2, 3):
        failures.append(f"exit {code}")
    if "Traceback" in stderr:
        failures.append("Traceback on stderr")
    if code == 2 and not SENTENCE.match(stderr):
        failures.append(f"exit 2 without one error sentence on stderr: {stderr[-300:]!r}")
    if code == 2 and SENTENCE.match(stderr):
        sentence = stderr.split(": error: ", 1)[1]
        if re.search(r"\.\s+[A-Z]", sentence):
            failures.append(f"more than one sentence: {sentence!r}")
    if expect == "error" and code != 2:
        failures.append(f"exit {code}, expected 2 (an input error)")
    if expect == "valid":
        wanted = base_code if command == "scan" else 0
        if code != wanted:
            failures.append(f"exit {code}, expected the normal verdict {wanted}: {stderr[-200:]!r}")
    return failures


# ----------------------------------------------------------------------------- the output of defend


def walk(directory: Path):
    """``os.walk`` without recursion (a mutant's folder tree may be deeper than the stack) and
    without following folder links: (folder, subfolder names, other names), top down."""
    pending = [Path(directory)]
    while pending:
        root = pending.pop()
        dirs, files = [], []
        with os.scandir(root) as entries:
            for entry in entries:
                (dirs if entry.is_dir(follow_symlinks=False) else files).append(entry.name)
        yield root, sorted(dirs), sorted(files)
        pending.extend(root / name for name in reversed(sorted(dirs)))


def companion_entries(directory: Path) -> dict[str, str]:
    """Relative path -> kind ("file", "dir" or another type) of everything that is not a weight file,
    links followed for files only."""
    found = {}
    for root, dirs, files in walk(directory):
        for name in dirs + files:
            path = Path(root) / name
            relative = path.relative_to(directory).as_posix()
            if any(part in (".git", ".cache") for part in Path(relative).parts):
                continue
            if any(fnmatch.fnmatch(name, p) for p in WEIGHT_PATTERNS) or name == "flipguard_defense.json":
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError:
                found[relative] = "broken link"
                continue
            if os.path.islink(path) and stat.S_ISDIR(mode):
                found[relative] = "folder link"
            else:
                found[relative] = "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "special"
    return found


def judge_defended(source: Path, out: Path, code: int | None) -> list[str]:
    parent = out.parent
    leftovers = [p.name for p in parent.iterdir() if ".flipguard-tmp-" in p.name or ".flipguard-old-" in p.name]
    failures = [f"temporary directory left behind: {leftovers}"] if leftovers else []
    if code != 0:
        if out.exists() or out.is_symlink():
            failures.append("output written on error")
        return failures
    if not out.is_dir():
        return failures + ["exit 0 but no output directory"]
    inputs, outputs = companion_entries(source), companion_entries(out)
    for relative, kind in inputs.items():
        if kind not in ("file", "dir"):
            failures.append(f"silent loss: {relative} is a {kind}, yet defend exited 0")
        elif outputs.get(relative) != kind:
            failures.append(f"silent loss: {relative} ({kind}) missing from the output")
        elif kind == "file" and (source / relative).read_bytes() != (out / relative).read_bytes():
            failures.append(f"companion file changed: {relative}")
    try:
        from flipguard.checkpoint import open_checkpoint

        if set(open_checkpoint(out).tensors) != set(open_checkpoint(source).tensors):
            failures.append("output tensors differ from the input's")
    except Exception as error:  # noqa: BLE001
        failures.append(f"output does not open: {error}")
    return failures


# ----------------------------------------------------------------------------- one mutant


def run_mutant(index: int, mutant: Mutant, bases: dict[str, Path], base_codes: dict[str, int], work: Path,
               timeout: float = 60.0, commands: tuple[str, ...] = COMMANDS) -> Outcome:
    """Copy base ``mutant.base`` to ``work/<index>/ckpt``, mutate it, run each command, judge."""
    _install_hook()
    slot = work / f"{index:05d}"
    try:
        return Outcome(mutant, _run_in(slot, mutant, bases, base_codes, timeout, commands))
    finally:
        remove_tree(slot)


def _run_in(slot: Path, mutant: Mutant, bases: dict[str, Path], base_codes: dict[str, int], timeout: float,
            commands: tuple[str, ...]) -> list[Run]:
    ckpt, out = slot / "ckpt", slot / "out"
    shutil.copytree(bases[mutant.base], ckpt, symlinks=True)
    sentinel = slot / SENTINEL
    shutil.copyfile(bases["llama"] / SINGLE, sentinel)  # a valid shard, outside: never to be read
    long_ago = time.time() - 3 * 86400
    os.utime(sentinel, (long_ago, time.time()))  # relatime updates an access time older than 24 h
    mutant.apply(ckpt)
    before = os.stat(sentinel).st_atime_ns
    runs = []
    for command in commands:
        argv = ["scan", "-q", str(ckpt)] if command == "scan" else ["defend", "-q", str(ckpt), "-o", str(out)]
        _watch.update(root=str(slot) + os.sep, allowed=(str(ckpt) + os.sep, str(out), str(slot / ".out")), seen=[])
        try:
            code, _, stderr, failure, seconds = call_main(argv, timeout)
        finally:
            seen, _watch["root"] = list(_watch["seen"]), None
        run = Run(command, code, stderr, seconds)
        if failure:
            run.failures.append(failure)
        else:
            run.failures += judge_output(command, code, stderr, mutant.expected(command), base_codes[mutant.base])
        if seen:
            run.failures.append(f"opened outside the folder: {seen[:2]}")
        if os.stat(sentinel).st_atime_ns != before:
            run.failures.append("the sentinel outside the folder was read")
        if command == "defend" and not failure:
            run.failures += judge_defended(ckpt, out, code)
        runs.append(run)
    return runs


def remove_tree(slot: Path) -> None:
    """Remove a work folder, FIFOs, sockets, symlink loops and trees deeper than the stack included."""
    folders = [root for root, _, _ in walk(slot)] if slot.is_dir() and not slot.is_symlink() else []
    for root in reversed(folders):  # deepest first, without recursion (rmtree recurses per level)
        with os.scandir(root) as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
        os.rmdir(root)
    if slot.is_symlink() or slot.exists():
        os.unlink(slot)


# ----------------------------------------------------------------------------- the tally


def tally(outcomes: list[Outcome]) -> str:
    """A table per class: mutants, exit codes of scan and defend, failures."""
    rows = defaultdict(lambda: {"n": 0, "scan": Counter(), "defend": Counter(), "failed": 0})
    for outcome in outcomes:
        row = rows[outcome.mutant.kind]
        row["n"] += 1
        for run in outcome.runs:
            row[run.command][run.code if not run.failures or run.code is not None else "crash"] += 1
        row["failed"] += bool(outcome.failures)
    lines = [f"{'class':28} {'mutants':>7}  {'scan exits':24} {'defend exits':24} failed"]
    for kind in sorted(rows):
        row = rows[kind]
        scan = " ".join(f"{k}:{v}" for k, v in sorted(row["scan"].items(), key=str))
        defend = " ".join(f"{k}:{v}" for k, v in sorted(row["defend"].items(), key=str))
        lines.append(f"{kind:28} {row['n']:>7}  {scan:24} {defend:24} {row['failed']}")
    total = sum(r["n"] for r in rows.values())
    failed = sum(r["failed"] for r in rows.values())
    lines.append(f"{'total':28} {total:>7}  {'':24} {'':24} {failed}")
    return "\n".join(lines)


def failure_kinds(outcomes: list[Outcome]) -> Counter:
    """Failures by kind: traceback, hang, output on error, outside read, silent loss, verdict, message."""
    kinds = Counter()
    for outcome in outcomes:
        for failure in outcome.failures:
            text = failure.split(": ", 1)[1]
            for key, word in [("traceback", "traceback"), ("hang", "hang"), ("output on error", "output written"),
                              ("outside read", "outside the folder"), ("silent loss", "silent loss"),
                              ("message", "sentence"), ("exit code", "exit")]:
                if text.startswith(word) or word in text:
                    kinds[key] += 1
                    break
            else:
                kinds["other"] += 1
    return kinds
