"""FlipGuard: scan, defend, attack and evaluate quantization-conditioned backdoors (QCB).

    import flipguard
    report = flipguard.scan("path/to/model")                  # -> flipguard.scan.ScanReport
    report = flipguard.defend("path/to/model", "defended")    # -> flipguard.defend.DefenseReport
    result = flipguard.evaluate("defended", "nf4", "content-injection")  # -> EvaluationResult
    report = flipguard.attack("clean", "attacked", "content-injection", "nf4")  # -> AttackReport
    model = flipguard.from_pretrained("model", quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    result = flipguard.batch(["model-a", "org/name"], "out")  # many checkpoints on Ray -> BatchResult

Each name is a package, loaded on first use, whose module object is also its main entry point
(``flipguard.scan(...)`` is ``flipguard.scan.scan_checkpoint(...)``).
"""

import importlib

__version__ = "0.1.0"

_LAZY = ("scan", "defend", "batch", "evaluate", "attack")
_FUNCTIONS = {"from_pretrained": "flipguard.loader"}

__all__ = ["__version__", *_LAZY, *_FUNCTIONS]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"flipguard.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(_FUNCTIONS[name]), name)
    raise AttributeError(f"module 'flipguard' has no attribute {name!r}")
