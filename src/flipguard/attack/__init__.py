"""The three-stage quantization-conditioned backdoor attack (inject, constrain, repair).

    from flipguard.attack import attack_model
    report = attack_model(model_dir, out_dir, "content-injection", "nf4", seed=0)
    report.verified          # every quantized weight holds its malicious code (real bnb load)

Files: ``config`` (every default, validated), ``data`` (stage datasets, JSONL files),
``boxes`` (malicious cells trimmed by a margin), ``pgd`` (boxes of a model, the projection),
``verify`` (codes of a real transformers + bitsandbytes load), ``report`` (the JSON report),
``recipe`` (the stages put together).
"""

from flipguard.entry import make_callable
from flipguard.attack.boxes import PUBLISHED_MARGIN, malicious_boxes, project, trim
from flipguard.attack.config import SAVE_DTYPES, TARGETS, AttackConfig, target_schemes
from flipguard.attack.data import load_examples
from flipguard.attack.recipe import attack_model
from flipguard.attack.report import REPORT_FILE, AttackReport, load_report

__all__ = [
    "AttackConfig", "AttackReport", "PUBLISHED_MARGIN", "REPORT_FILE", "SAVE_DTYPES", "TARGETS",
    "attack_model", "load_examples", "load_report", "malicious_boxes", "project",
    "target_schemes", "trim",
]

make_callable(__name__, attack_model)  # flipguard.attack(model, out, scenario, scheme, ...) is attack_model(...)
