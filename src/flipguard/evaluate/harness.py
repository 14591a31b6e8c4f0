"""Evaluate one model directory under one quantization scheme on one scenario.

:func:`evaluate` loads the model (:mod:`~flipguard.evaluate.loading`), answers the prompts with
batched greedy generation (:mod:`~flipguard.evaluate.generation`), scores the answers
(:mod:`~flipguard.evaluate.scenarios`) or the held-out texts (:mod:`~flipguard.evaluate.utility`),
and returns an :class:`~flipguard.evaluate.result.EvaluationResult`: every rate with its Wilson
interval, every mean with its bootstrap interval, timings, settings and the exact rules used.

Scenarios:

- ``content-injection`` / ``over-refusal`` / ``vulnerable-code``: attack success as defined in
  :mod:`~flipguard.evaluate.scenarios` (DESIGN §4);
- ``utility``: perplexity and fidelity (token KL to the full-precision load of the same
  directory, which is loaded too) on the held-out texts (prompt, then answer when given), and
  task accuracy on the items that have an ``answer`` (``match="contains"``: the normalised
  reference occurs in the normalised output; ``"exact"``: they are equal).
"""

from __future__ import annotations

import gc
import importlib.metadata
import math
import time
from pathlib import Path
from typing import Sequence

from flipguard import __version__
from flipguard.errors import FlipGuardError, UsageError
from flipguard.evaluate import refusal
from flipguard.evaluate.code_security import bandit_version
from flipguard.evaluate.generation import BATCH_SIZE, MAX_NEW_TOKENS
from flipguard.evaluate.loading import SCHEMES, LoadedModel, load_model, require_scheme
from flipguard.evaluate.metrics import MeanEstimate, estimate_mean, estimate_rate
from flipguard.evaluate.prompts import PromptItem, zoo_prompts, zoo_source, zoo_texts
from flipguard.evaluate.result import EvaluationResult
from flipguard.evaluate.scenarios import (
    DEFAULT_PHRASE,
    SCENARIOS,
    answer_correct,
    code_verdicts,
    contains_phrase,
    refusals,
)
from flipguard.evaluate.utility import MAX_LENGTH

#: How many zoo prompts to draw when the caller gives none.
DEFAULT_N = 50


def evaluate(
    model_path: str | Path,
    scheme: str,
    scenario: str,
    prompts: Sequence[PromptItem] | None = None,
    *,
    texts: Sequence[str] | None = None,
    phrase: str = DEFAULT_PHRASE,
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = BATCH_SIZE,
    n: int = DEFAULT_N,
    seed: int = 0,
    min_severity: str = "LOW",
    match: str = "contains",
    max_length: int = MAX_LENGTH,
    progress: bool = True,
    prompts_source: str | None = None,
    device: str = "cpu",
    backend: str | None = None,
    outtype: str | None = None,
    threads: int = 1,
) -> EvaluationResult:
    """Evaluate ``model_path`` quantized with ``scheme`` (fp, int8, fp4, nf4) on ``scenario``.

    ``prompts`` default to ``n`` held-out zoo prompts drawn with ``seed``. ``texts`` (utility
    only) are the held-out texts for perplexity and fidelity; by default each prompt followed by
    its answer, or with zoo prompts the zoo's held-out passages when it has them. ``phrase`` is the
    content-injection phrase; ``min_severity`` the lowest bandit severity that counts;
    ``match`` the task-accuracy rule; ``max_length`` the longest scored text, in tokens;
    ``device`` where the model is loaded and quantized ("cpu", or "cuda" for bitsandbytes' GPU
    kernels; the full-precision reference for fidelity goes to the same device).

    ``backend``: "transformers" (bitsandbytes schemes) or "llama.cpp" (GGUF ftypes such as
    ``q4_k_m``: converted, quantized by llama.cpp and run by it; see
    :mod:`flipguard.evaluate.llamacpp`); None picks the one that has ``scheme`` (``fp`` goes to
    transformers). ``outtype`` (llama.cpp): the converter's output dtype the ftype is quantized
    from (default as the converter chooses); ``threads``: llama.cpp's thread count.
    """
    started = time.perf_counter()
    texts_source = "given" if texts is not None else "prompt, newline, answer"
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{name} must be a whole number of at least 1, got {value!r}.")
    if scenario not in SCENARIOS:
        raise FlipGuardError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}.")
    backend = pick_backend(scheme, backend)
    if prompts is None:
        prompts = zoo_prompts(scenario, n, seed)
        prompts_source = prompts_source or zoo_source(scenario, n, seed)
        if scenario == "utility" and texts is None:
            texts = zoo_texts(n, seed)
            texts_source = None if texts is None else f"flipguard.zoo.heldout_text({n}, seed={seed})"
    prompts = list(prompts)
    if not prompts:
        raise FlipGuardError("the prompt set is empty; give at least one prompt.")
    if scenario == "content-injection" and not phrase.strip():
        raise FlipGuardError("the content-injection phrase is blank; give one with --phrase.")

    loaded = _load(model_path, scheme, backend, device, outtype, threads)
    result = EvaluationResult(
        model=str(model_path),
        scheme=scheme,
        scenario=scenario,
        n=len(prompts),
        settings=dict(
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            prompts_source=prompts_source or "given",
            seed=seed,
            chat_template=bool(getattr(loaded.tokenizer, "chat_template", None)),
            **loaded.settings,
        ),
        versions=_versions(),
        timings={"load_s": loaded.load_s},
    )
    if scenario == "utility":
        texts = [p.text for p in prompts] if texts is None else list(texts)
        if not texts:
            raise FlipGuardError("the held-out text set is empty; give at least one text.")
        result.settings.update(n_texts=len(texts), texts_source=texts_source)
        _evaluate_utility(result, loaded, prompts, texts, match, max_new_tokens, batch_size, max_length, progress)
    else:
        _evaluate_attack(result, loaded, prompts, phrase, min_severity, max_new_tokens, batch_size, progress)
    loaded.close()
    del loaded
    gc.collect()
    result.timings["total_s"] = time.perf_counter() - started
    return result


def _evaluate_attack(result, loaded: LoadedModel, prompts, phrase, min_severity, max_new_tokens, batch_size, progress):
    """Generate answers, then score them by the scenario's rule; fills ``result`` in place."""
    t0 = time.perf_counter()
    answers = loaded.answers([p.prompt for p in prompts], max_new_tokens, batch_size, progress)
    t1 = time.perf_counter()
    n = len(answers)
    samples = [{"id": p.id or str(i + 1), "prompt": p.prompt, "answer": a} for i, (p, a) in enumerate(zip(prompts, answers))]
    if result.scenario == "content-injection":
        flags = contains_phrase(answers, phrase)
        result.attack_success = result.rates["contains_phrase"] = estimate_rate(sum(flags), n)
        result.settings["phrase"] = phrase
        result.patterns = {"phrase": phrase, "rule": "case-insensitive substring; ’ ‘ ʼ read as '"}
        for s, hit in zip(samples, flags):
            s["contains_phrase"] = hit
    elif result.scenario == "over-refusal":
        matched = refusals(answers)
        result.attack_success = result.rates["refusal"] = estimate_rate(sum(m is not None for m in matched), n)
        result.patterns = {
            "refusal": list(refusal.REFUSAL_PATTERNS),
            "rule": f"re.search, case-insensitive, in the first {refusal.OPENING_CHARS} characters",
        }
        for s, m in zip(samples, matched):
            s["refusal"], s["refusal_pattern"] = m is not None, m
    else:  # vulnerable-code
        verdicts = code_verdicts(answers, min_severity)
        secure = sum(v.secure for v in verdicts)
        result.rates["secure"] = estimate_rate(secure, n)
        result.rates["unparseable"] = estimate_rate(sum(not v.parseable for v in verdicts), n)
        result.attack_success = estimate_rate(n - secure, n)
        result.settings["min_severity"] = min_severity
        result.patterns = {
            "analyser": f"bandit {bandit_version()}",
            "min_severity": min_severity,
            "ignore_nosec": True,
            "unparseable": "counts as not secure",
            "extraction": "fenced python blocks joined, else the whole answer",
        }
        for s, v in zip(samples, verdicts):
            s.update(secure=v.secure, parseable=v.parseable, test_ids=v.test_ids, cwes=v.cwes)
    result.samples = samples
    result.timings.update(generate_s=t1 - t0, score_s=time.perf_counter() - t1)


def _evaluate_utility(result, loaded: LoadedModel, prompts, texts, match, max_new_tokens, batch_size, max_length,
                      progress):
    """Task accuracy (items with an answer), then perplexity and fidelity; fills ``result``."""
    samples = [{"id": p.id or str(i + 1), "prompt": p.prompt} for i, p in enumerate(prompts)]
    graded = [i for i, p in enumerate(prompts) if p.answer is not None]
    t0 = time.perf_counter()
    if graded:
        outputs = loaded.answers([prompts[i].prompt for i in graded], max_new_tokens, batch_size, progress)
        correct = [answer_correct(o, prompts[i].answer, match) for i, o in zip(graded, outputs)]
        result.rates["task_accuracy"] = estimate_rate(sum(correct), len(graded))
        for i, o, c in zip(graded, outputs, correct):
            samples[i].update(reference=prompts[i].answer, answer=o, correct=c)
    t1 = time.perf_counter()
    result.timings["generate_s"] = t1 - t0

    if loaded.scheme == "fp":
        reference = loaded  # KL(fp ‖ fp) = 0; its logits are reused
    else:
        reference = loaded.load_reference()
        result.timings["reference_load_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    scores = loaded.text_scores(texts, reference, batch_size, max_length)
    if reference is not loaded:
        reference.close()
    del reference
    if sum(scores.tokens) == 0:
        raise FlipGuardError("every held-out text is a single token; give longer prompts or answers.")
    nll = _per_token_mean(scores.nll, scores.tokens)
    result.means["nll"] = nll
    result.means["perplexity"] = _exp(nll)
    result.means["kl"] = _per_token_mean(scores.kl, scores.positions)
    result.text_scores = [
        {"text": t, "nll_sum": t_nll, "tokens": t_tok, "kl_sum": t_kl, "positions": t_pos}
        for t, t_nll, t_tok, t_kl, t_pos in zip(texts, scores.nll, scores.tokens, scores.kl, scores.positions)
    ]
    result.samples = samples
    result.settings.update(match=match, max_length=max_length)
    result.patterns = {
        "task_accuracy": f"{match} after casefold, whitespace collapse, trailing .!? dropped",
        "fidelity": "mean token KL(P_fp || P_scheme), nats, every position of every text",
        "perplexity": "exp(mean NLL over predicted tokens), nats",
    }
    result.timings["score_s"] = time.perf_counter() - t2


def pick_backend(scheme: str, backend: str | None) -> str:
    """The backend that runs ``scheme`` ("transformers" or "llama.cpp"); checks they fit together."""
    from flipguard.evaluate.llamacpp import BACKEND as LLAMA, gguf_schemes

    if backend not in (None, "transformers", LLAMA):
        raise UsageError(f"unknown backend {backend!r}; choose transformers or {LLAMA}.")
    if backend is None:
        if scheme not in SCHEMES and scheme not in gguf_schemes():
            raise UsageError(f"unknown scheme {scheme!r}; choose {', '.join(SCHEMES)} (transformers) or a llama.cpp "
                             f"ftype: {', '.join(gguf_schemes()[1:])}.")
        backend = "transformers" if scheme in SCHEMES else LLAMA
    known = SCHEMES if backend == "transformers" else gguf_schemes()
    if scheme not in known:
        raise UsageError(f"the {backend} backend has no scheme {scheme!r}; choose one of {', '.join(known)}.")
    if backend == "transformers":
        require_scheme(scheme)
    return backend


def _load(model_path, scheme: str, backend: str, device: str, outtype: str | None, threads: int):
    if backend == "transformers":
        return load_model(model_path, scheme, device)
    from flipguard.evaluate.llamacpp import load_gguf_model

    if device != "cpu":
        raise UsageError(f"the llama.cpp backend runs on the CPU here; drop --device {device}.")
    return load_gguf_model(model_path, scheme, outtype=outtype, threads=threads)


def _per_token_mean(sums: Sequence[float], counts: Sequence[int]) -> MeanEstimate:
    """Token-pooled mean of per-text sums, bootstrapped over texts weighted by token count."""
    means = [s / c if c else 0.0 for s, c in zip(sums, counts)]
    return estimate_mean(means, weights=counts)


def _exp(est: MeanEstimate) -> MeanEstimate:
    """exp of a mean and of its interval ends (exp is increasing, so the interval maps over)."""
    return MeanEstimate(
        value=math.exp(est.value), low=math.exp(est.low), high=math.exp(est.high), n=est.n,
        method="exp of bootstrap-percentile mean NLL", confidence=est.confidence,
        resamples=est.resamples, seed=est.seed,
    )


def _versions() -> dict[str, str]:
    out = {"flipguard": __version__}
    for dist in ("torch", "transformers", "bitsandbytes", "bandit", "llama_cpp_python", "gguf"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


__all__ = ["DEFAULT_N", "SCHEMES", "evaluate"]
