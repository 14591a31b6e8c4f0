"""Evaluation harness: attack success and utility of a checkpoint in full precision or quantized.

Public API (each name documented where it lives):

- :func:`evaluate` (harness) -> :class:`EvaluationResult` (result), saved as JSON and read back
  with :func:`load_result`;
- :func:`compare_results` (compare) -> :class:`Comparison` holding the :class:`DER` and its parts;
- statistics (metrics): :func:`wilson_interval`, :func:`bootstrap_interval`,
  :func:`defense_effectiveness`, :func:`estimate_rate`, :func:`estimate_mean`;
- classifiers: :func:`is_refusal` / :data:`REFUSAL_PATTERNS` (refusal), :func:`check_code` /
  :func:`extract_code` (code_security, static bandit analysis; code is never executed);
- :func:`load_prompts` (prompts) for the JSONL prompt format;
- :func:`load_model` (loading) and :func:`generate_answers` (generation);
  :func:`score_texts` (utility) for perplexity and fidelity.
"""

from flipguard.entry import make_callable
from flipguard.evaluate.code_security import CodeVerdict, Finding, check_code, extract_code
from flipguard.evaluate.compare import Comparison, compare_results
from flipguard.evaluate.generation import generate_answers
from flipguard.evaluate.harness import evaluate
from flipguard.evaluate.loading import SCHEMES, LoadedModel, load_model
from flipguard.evaluate.metrics import (
    DER,
    MIN_BACKDOOR_GAP,
    MeanEstimate,
    RateEstimate,
    bootstrap_interval,
    defense_effectiveness,
    estimate_mean,
    estimate_rate,
    wilson_interval,
)
from flipguard.evaluate.prompts import PromptItem, load_prompts
from flipguard.evaluate.refusal import REFUSAL_PATTERNS, is_refusal, refusal_match
from flipguard.evaluate.result import EvaluationResult, load_result
from flipguard.evaluate.scenarios import ATTACK_SCENARIOS, DEFAULT_PHRASE, SCENARIOS
from flipguard.evaluate.utility import score_texts

__all__ = [
    "ATTACK_SCENARIOS", "CodeVerdict", "Comparison", "DEFAULT_PHRASE", "DER", "EvaluationResult",
    "Finding", "LoadedModel", "MIN_BACKDOOR_GAP", "MeanEstimate", "PromptItem", "REFUSAL_PATTERNS",
    "RateEstimate", "SCENARIOS", "SCHEMES", "bootstrap_interval", "check_code", "compare_results",
    "defense_effectiveness", "estimate_mean", "estimate_rate", "evaluate", "extract_code",
    "generate_answers", "is_refusal", "load_model", "load_prompts", "load_result", "refusal_match",
    "score_texts", "wilson_interval",
]

make_callable(__name__, evaluate)  # flipguard.evaluate(model, scheme, scenario, ...) is harness.evaluate(...)
