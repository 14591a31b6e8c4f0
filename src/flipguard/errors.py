"""Errors a user can cause, and the one table of exit codes every command uses.

Each error carries one sentence that says what is wrong and what to do. The CLI catches
:class:`FlipGuardError` once, prints its message without a traceback and exits with
:attr:`FlipGuardError.exit_code`. Anything else is a bug: the CLI prints one sentence and exits
with :data:`INTERNAL_ERROR` (the traceback only with ``--debug``).
"""

OK = 0  # done; for scan: no findings
FINDINGS = 1  # scan: traces of a quantization-conditioned backdoor were found
INPUT_ERROR = 2  # usage or input error: one sentence on stderr, nothing written
NOTHING_SCANNABLE = 3  # the checkpoint holds no tensor the chosen quantization touches
INTERNAL_ERROR = 70  # a bug in FlipGuard (EX_SOFTWARE): one sentence, rerun with --debug
INTERRUPTED = 130  # Ctrl-C: nothing was written

EXIT_CODES = {
    OK: "ok (scan: clean)",
    FINDINGS: "findings (scan found traces of a backdoor)",
    INPUT_ERROR: "usage or input error (one sentence on stderr; nothing written)",
    NOTHING_SCANNABLE: "nothing scannable (no tensor the chosen quantization touches)",
    INTERNAL_ERROR: "internal error (a bug: rerun with --debug and report it)",
    INTERRUPTED: "interrupted (nothing written)",
}


def exit_code_help() -> str:
    """The exit-code table as ``--help`` prints it."""
    width = max(len(str(code)) for code in EXIT_CODES)
    rows = "\n".join(f"  {code:>{width}}  {meaning}" for code, meaning in EXIT_CODES.items())
    return f"exit codes:\n{rows}"


class FlipGuardError(Exception):
    """A problem with the user's input (path, file, option): exit code 2."""

    exit_code = INPUT_ERROR


class UsageError(FlipGuardError):
    """A command line or argument that cannot be run as written (unknown value, bad range): exit 2."""

    exit_code = INPUT_ERROR


class NothingScannableError(FlipGuardError):
    """The checkpoint holds no tensor the chosen quantization would touch: exit 3."""

    exit_code = NOTHING_SCANNABLE
