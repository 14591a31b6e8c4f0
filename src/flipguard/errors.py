"""Errors a user can cause. Each carries one sentence that says what is wrong and what to do.

The CLI catches :class:`FlipGuardError` once, prints its message without a traceback and exits
with :attr:`FlipGuardError.exit_code`. Anything else is a bug and keeps its traceback.
"""


class FlipGuardError(Exception):
    """A problem with the user's input (path, file, option); exit code 2 by default."""

    exit_code = 2


class UsageError(FlipGuardError):
    """A command line that cannot be run as written (unknown option value, bad range); exit 4 in scan."""

    exit_code = 2


class NothingScannableError(FlipGuardError):
    """The checkpoint holds no tensor a bitsandbytes quantization would touch."""

    exit_code = 3
