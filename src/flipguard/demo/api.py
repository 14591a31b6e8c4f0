"""``run_demo``: the whole story into a fresh output directory, written atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flipguard.checkpoint.atomic import check_output_dir, make_temp_dir, move_into_place, remove_path
from flipguard.demo import plots
from flipguard.demo.assets import SCHEMES  # noqa: F401  (re-exported for callers)
from flipguard.demo.story import DEFAULT_SCHEMES, MAX_NEW_TOKENS, N_PROMPTS, N_TEXTS, run_story
from flipguard.demo.summary import DemoSummary


def default_output() -> Path:
    """A fresh directory in the working directory: ``flipguard-demo-YYYYmmdd-HHMMSS``."""
    return Path(f"flipguard-demo-{time.strftime('%Y%m%d-%H%M%S')}")


def run_demo(out: str | Path | None = None, schemes=DEFAULT_SCHEMES, n_prompts: int = N_PROMPTS,
             n_texts: int = N_TEXTS, max_new_tokens: int = MAX_NEW_TOKENS, force: bool = False,
             keep_models: bool = False, log=print) -> tuple[DemoSummary, Path]:
    """Run the demo; write ``summary.json``, ``demo.md``, scan reports and PNG plots to ``out``.

    Everything is made in a hidden sibling directory and renamed into place at the end, so ``out``
    is complete or absent. Models (unpacked, defended) are removed unless ``keep_models``.
    Returns the summary and the output directory.
    """
    from flipguard.scan import plot_histograms

    out = check_output_dir(Path(out) if out else default_output(), Path(__file__).parent / "assets", force)
    temp = make_temp_dir(out)
    try:
        summary, scans = run_story(temp, schemes, n_prompts, n_texts, max_new_tokens, log)
        log("\nWriting the report and plots ...")
        files = plots.plot_wall_distances(scans, summary, temp)
        files.append(plots.plot_security_fidelity(summary, temp / "security_fidelity.png"))
        for scheme in schemes:
            report = scans[(scheme, "before")]
            files += plot_histograms(report, temp / "scan" / scheme)[:2]
            for when in ("before", "after"):
                path = temp / "scan" / f"{scheme}-{when}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(scans[(scheme, when)].to_json())
                files.append(path)
        summary.files = sorted(str(f.relative_to(temp)) for f in files) + ["demo.md", "summary.json"]
        if not keep_models:
            for sub in ("models", "defended"):
                remove_path(temp / sub)
            summary.files = [f for f in summary.files if not f.startswith(("models", "defended"))]
        (temp / "demo.md").write_text(summary.to_markdown())
        (temp / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        move_into_place(temp, out, force)
    except BaseException:
        remove_path(temp)
        raise
    return summary, out
