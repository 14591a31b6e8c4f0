"""Scale-out: scan or defend many checkpoints as Ray tasks (see ``flipguard batch --help``).

    import flipguard
    result = flipguard.batch(["model-a", "model-b", "org/name"], "out")          # scan, local Ray
    result = flipguard.batch(paths, "out", "defend", policy="dither", workers=4)  # defend
    result.counts, result.failures, result.exit_code

Results go under ``out``: ``results.jsonl`` (one line per checkpoint), ``summary.json``,
``reports/<name>.json`` (scans) and ``defended/<name>/`` (defenses); a re-run skips what is done.
Ray is an optional dependency (``pip install 'flipguard[ray]'``), imported only when a batch runs.
"""

from flipguard.batch.inputs import Item, fingerprint_directory, resolve_input, resolve_inputs
from flipguard.batch.jobs import JOBS, Job, run_item
from flipguard.batch.ledger import RESULTS_FILE, SUMMARY_FILE, Ledger, read_results
from flipguard.batch.results import BatchResult
from flipguard.batch.runner import MAX_RETRIES, batch, ray_session, run_batch
from flipguard.entry import make_callable

__all__ = [
    "JOBS",
    "MAX_RETRIES",
    "RESULTS_FILE",
    "SUMMARY_FILE",
    "BatchResult",
    "Item",
    "Job",
    "Ledger",
    "batch",
    "fingerprint_directory",
    "ray_session",
    "read_results",
    "resolve_input",
    "resolve_inputs",
    "run_batch",
    "run_item",
]

make_callable(__name__, batch)  # flipguard.batch(inputs, out, ...) is batch(inputs, out, ...)
