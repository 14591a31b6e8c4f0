"""``flipguard demo``: the whole story of a quantization-conditioned backdoor on bundled tiny models.

    from flipguard.demo import run_demo
    summary, out = run_demo("demo-out")       # table in out/demo.md, plots beside it

``assets`` (the bundled checkpoints, ``rebuild``), ``story`` (the measurements), ``render``
(table and plots), ``api`` (``run_demo``: atomic output directory).
"""

from flipguard.demo.api import default_output, run_demo
from flipguard.demo.assets import ASSETS, SCENARIO, SCHEMES, RebuildRecipe, rebuild, unpack
from flipguard.demo.summary import DemoSummary, SchemeStory

__all__ = ["ASSETS", "DemoSummary", "RebuildRecipe", "SCENARIO", "SCHEMES", "SchemeStory", "default_output",
           "rebuild", "run_demo", "unpack"]
