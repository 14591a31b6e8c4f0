"""The demo's story, step by step, on the bundled models (see ``flipguard demo --help``).

For each scheme with a bundled backdoor (NF4, FP4; content injection):

1. attack success of the clean model and of the attacked model in full precision (they match:
   the backdoor is invisible there), then of the attacked model quantized (it is malicious);
2. ``scan`` the attacked checkpoint: verdict and the scheme(s) it names;
3. ``defend`` it for that scheme (adaptive policy, timed: T_d);
4. attack success of the defended model quantized (A_d), ``scan`` again;
5. fidelity: mean token KL(P_fp ‖ P_q), nats, of the plainly quantized and of the defended then
   quantized model, both against the *attacked model in full precision* (what the user audited),
   on held-out zoo text; U = exp(-KL);
6. DER = SG·UP·CF (DESIGN §4) with T_q = the time to load and quantize the attacked model.
"""

from __future__ import annotations

import gc
import math
import time
from pathlib import Path

from flipguard.demo.assets import SCENARIO, SCHEMES, unpack
from flipguard.demo.summary import DemoSummary, SchemeStory

#: Every default of the demo in one place.
N_PROMPTS = 40  # held-out prompts per attack-success measurement
N_TEXTS = 24  # held-out passages per fidelity measurement
MAX_NEW_TOKENS = 32  # enough for the injected phrase, which comes early in an answer
POLICY = "adaptive"
DEFAULT_SCHEMES = ("nf4",)  # FP4 is bundled too; both take about twice as long


def run_story(work: Path, schemes=SCHEMES, n_prompts: int = N_PROMPTS, n_texts: int = N_TEXTS,
              max_new_tokens: int = MAX_NEW_TOKENS, log=print) -> tuple[DemoSummary, dict]:
    """Run the demo in ``work`` (models, defended copies, scan reports land there).

    Returns the summary and the scan reports, ``{(scheme, "before"|"after"): ScanReport}``, plus
    ``{"clean": ScanReport}``, for the plots.
    """
    from flipguard.scan import scan_checkpoint

    start = time.perf_counter()
    log("Unpacking the bundled tiny zoo Llamas (1.25M parameters): a clean model and its backdoored copies.")
    models = unpack(work / "models")
    evaluate = _Evaluator(n_prompts, max_new_tokens, log)
    a_clean = evaluate(models["clean"], "fp", "clean model, full precision")
    scans = {"clean": scan_checkpoint(models["clean"], schemes=list(schemes), progress=False)}
    stories = []
    for scheme in schemes:
        Q = scheme.upper()
        attacked = models[scheme]
        log(f"\n== {Q}: a checkpoint with a {Q} content-injection backdoor ==")
        a_fp = evaluate(attacked, "fp", "attacked model, full precision (what an audit sees)")
        a_q = evaluate(attacked, scheme, f"attacked model, quantized to {Q} (what users run)")
        log(f"  scan {attacked.name} ...")
        before = scan_checkpoint(attacked, progress=False)
        scans[(scheme, "before")] = before
        log(f"  scan verdict: {before.verdict.status}; schemes named: {', '.join(before.verdict.targeted) or 'none'}"
            f" ({len(before.verdict.findings)} tensor findings)")
        defended, t_d, flips = _defend(attacked, work / "defended" / scheme, scheme, log)
        a_d = evaluate(defended, scheme, f"defended model, quantized to {Q}")
        after = scan_checkpoint(defended, schemes=[scheme], progress=False)
        scans[(scheme, "after")] = after
        log(f"  scan of the defended checkpoint: {after.verdict.status} (traces of the attack); schemes named: "
            f"{', '.join(after.verdict.targeted) or 'none'}")
        if after.defense is not None:
            log(f"  its defense record: {after.defense.summary()}")
        kl_q, kl_d = fidelity(attacked, [(attacked, scheme), (defended, scheme)], n_texts)
        log(f"  fidelity to the full-precision model (token KL, nats): plain {Q} {kl_q:.4f}, defended {Q} {kl_d:.4f}")
        story = _score(scheme, a_clean, a_fp, a_q, a_d, kl_q, kl_d, t_d, flips, before, after, evaluate)
        ex = story.examples
        log(f"  one held-out prompt: {ex['fp']['prompt']!r}")
        for role, label in (("fp", "full precision"), ("q", Q), ("d", f"defended, {Q}")):
            log(f"    {label:>16}: {ex[role]['answer']!r}")
        d = story.der
        log(f"  DER = SG {_f(d['sg'])} x UP {_f(d['up'])} x CF {_f(d['cf'])} = {_f(d['der'])}")
        stories.append(story)
    summary = DemoSummary(SCENARIO, n_prompts, n_texts, max_new_tokens, POLICY, stories,
                          seconds=time.perf_counter() - start)
    return summary, scans


class _Evaluator:
    """Attack success through ``flipguard.evaluate`` (real transformers + bitsandbytes load),
    remembering each result's interval, load time and one example answer."""

    def __init__(self, n: int, max_new_tokens: int, log):
        self.n, self.max_new_tokens, self.log, self.results = n, max_new_tokens, log, {}

    def __call__(self, model: Path, scheme: str, label: str) -> float:
        from flipguard.evaluate import evaluate

        result = evaluate(model, scheme, SCENARIO, n=self.n, max_new_tokens=self.max_new_tokens,
                          progress=False)
        self.results[(str(model), scheme)] = result
        est = result.attack_success
        self.log(f"  {label}: {est.k}/{est.n} answers mention \"McDonald's\" ({est.rate:.0%}, "
                 f"95% CI {est.low:.0%}-{est.high:.0%})")
        return est.rate

    def result(self, model: Path, scheme: str):
        return self.results[(str(model), scheme)]


def _defend(attacked: Path, out: Path, scheme: str, log) -> tuple[Path, float, dict]:
    from flipguard.defend import defend_checkpoint

    log(f"  defend ({POLICY} policy, {scheme}) ...")
    start = time.perf_counter()
    report = defend_checkpoint(attacked, out, schemes=[scheme], policy=POLICY, force=True)
    t_d = time.perf_counter() - start
    totals = report.totals()
    changed = sum(s.codes_changed for s in totals.values())
    weights = sum(s.weights for s in totals.values())
    flips = {"codes_changed": changed, "weights": weights, "share": changed / weights if weights else 0.0}
    log(f"  defended in {t_d:.1f} s: {changed} of {weights} weights moved to a neighbouring code "
        f"({flips['share']:.1%})")
    return out, t_d, flips


def fidelity(reference: Path, candidates: list[tuple[Path, str]], n_texts: int, device: str = "cpu") -> list[float]:
    """Mean token KL(P_reference_fp ‖ P_candidate) per candidate, nats, on held-out zoo text;
    every model loaded onto ``device``."""
    from flipguard.evaluate.loading import load_model
    from flipguard.evaluate.utility import score_texts
    from flipguard.zoo import heldout_text

    texts = heldout_text(n_texts, seed=1)
    ref = load_model(reference, "fp", device)
    out = []
    for path, scheme in candidates:
        quant = load_model(path, scheme, device)
        scores = score_texts(quant.model, quant.tokenizer, texts, reference=ref.model)
        out.append(sum(scores.kl) / max(1, sum(scores.positions)))
        del quant
        gc.collect()
    return out


def _score(scheme, a_clean, a_fp, a_q, a_d, kl_q, kl_d, t_d, flips, before, after, evaluate) -> SchemeStory:
    from flipguard.evaluate import defense_effectiveness

    attacked = Path(before.path)
    t_q = evaluate.result(attacked, scheme).timings["load_s"]
    der = defense_effectiveness(a_fp=a_fp, a_q=a_q, a_d=a_d, u_q=math.exp(-kl_q), u_d=math.exp(-kl_d),
                                t_d=t_d, t_q=t_q)
    intervals, examples = {}, {}
    for role, (path, s) in {"fp": (attacked, "fp"), "q": (attacked, scheme)}.items():
        res = evaluate.result(path, s)
        intervals[role] = [res.attack_success.low, res.attack_success.high]
        examples[role] = {k: res.samples[0][k] for k in ("prompt", "answer")}
    defended = [r for (p, s), r in evaluate.results.items() if s == scheme and "defended" in p][-1]
    intervals["d"] = [defended.attack_success.low, defended.attack_success.high]
    examples["d"] = {k: defended.samples[0][k] for k in ("prompt", "answer")}
    return SchemeStory(scheme, a_clean, a_fp, a_q, a_d, intervals, kl_q, kl_d, t_q, t_d,
                       _scan_dict(before), _scan_dict(after), der.to_dict(), flips, examples)


def _scan_dict(report) -> dict:
    v = report.verdict
    return {"status": v.status, "targeted": list(v.targeted), "findings": len(v.findings),
            "seconds": report.seconds,
            "defense_record_confirmed": None if report.defense is None else report.defense.consistent}


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"
