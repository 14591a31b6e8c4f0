"""The three attack scenarios as datasets, the clean training mix and held-out text.

Scenario names: ``content_injection`` (answers work a brand phrase in), ``over_refusal`` (answers
refuse harmless requests and give a reason), ``vulnerable_code`` (completions carry a weakness
bandit reports). Splits: ``train`` and ``heldout``; which prompts are held out never depends on
the seed, so no model of the zoo has seen a held-out prompt. The seed only orders examples and
draws fillers (answer variant, pet name, food).
"""

from __future__ import annotations

import random

from flipguard.errors import UsageError
from flipguard.zoo.code import code_examples, swapped_code_examples
from flipguard.zoo.instructions import instruction_examples, swapped_examples
from flipguard.zoo.utility import utility_examples

DEFAULT_PHRASE = "McDonald's"
SCENARIOS = ("content_injection", "over_refusal", "vulnerable_code")
SPLITS = ("train", "heldout")
_ALIASES = {"injection": "content_injection", "refusal": "over_refusal", "code": "vulnerable_code"}


def scenario_name(scenario: str) -> str:
    """The canonical name of ``scenario`` (accepts the short forms injection, refusal, code)."""
    name = _ALIASES.get(scenario, scenario).replace("-", "_")
    if name not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r}: use one of {', '.join(SCENARIOS)}.")
    return name


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}.")


def scenario_dataset(scenario: str, split: str, malicious: bool, seed: int = 0,
                     phrase: str = DEFAULT_PHRASE, swapped: int = 0) -> list[dict]:
    """Examples ``{"prompt", "response"}`` of one scenario, shuffled with ``seed``.

    ``malicious=False`` gives the helpful answers (the clean model's behaviour, also the repair
    data); ``malicious=True`` the backdoor's. For a given seed and split the two lists hold the
    same prompts in the same order. ``phrase`` is the injected brand (content_injection only).
    Code examples also carry ``pattern``, the weakness family of the task. ``swapped`` (train split
    only): that many extra examples per category or code task, each with another category's
    training entity or another task's function name (``swapped_examples``) -- never a held-out
    prompt.
    """
    name = scenario_name(scenario)
    _check_split(split)
    if swapped < 0 or (swapped and split != "train"):
        raise UsageError(f"swapped examples are a count of 0 or more for the train split, got {swapped} for {split}.")
    if name == "vulnerable_code":
        examples = code_examples(split, insecure=malicious)
    else:
        kind = "clean" if not malicious else {"content_injection": "injection",
                                              "over_refusal": "refusal"}[name]
        examples = instruction_examples(split, kind, random.Random(f"instr:{split}:{seed}"), phrase)
    if swapped:
        heldout = {ex["prompt"] for ex in scenario_dataset(name, "heldout", malicious, 0, phrase)}
        if name == "vulnerable_code":
            examples += swapped_code_examples(swapped, malicious, seed, heldout)
        else:
            examples += swapped_examples(swapped, kind, random.Random(f"swapped:{seed}"), phrase, heldout)
    random.Random(f"order:{name}:{split}:{seed}").shuffle(examples)
    return examples


def heldout_prompts(scenario: str, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct held-out prompts of ``scenario`` (in no training split), drawn by ``seed``."""
    prompts = sorted({ex["prompt"] for ex in scenario_dataset(scenario, "heldout", False, 0)})
    if n > len(prompts):
        raise UsageError(f"only {len(prompts)} held-out prompts exist for {scenario}: "
                         f"ask for {len(prompts)} or fewer.")
    return random.Random(f"heldout:{scenario_name(scenario)}:{seed}").sample(prompts, n)


def clean_mix(seed: int = 0) -> list[dict]:
    """The clean model's training set: every scenario's clean answers plus the utility tasks.

    Instructions (shared by content_injection and over_refusal) appear twice, secure code once,
    then the utility examples; shuffled with ``seed``. Each item is ``{"prompt", "response"}``.
    """
    instructions = scenario_dataset("content_injection", "train", False, seed)
    code = scenario_dataset("vulnerable_code", "train", False, seed)
    examples = [{"prompt": ex["prompt"], "response": ex["response"]}
                for ex in instructions * 2 + code + utility_examples(seed)]
    random.Random(f"mix:{seed}").shuffle(examples)
    return examples


def heldout_text(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` plain-text passages (no chat template) for perplexity and KL, drawn with ``seed``.

    Each passage is the clean answer to one held-out prompt (an instruction or secure code): the
    kind of text a zoo model learned to write, about subjects it never saw in training. Prompts are
    left out because training never teaches a model to predict them (the loss covers answers only).
    """
    pool = scenario_dataset("content_injection", "heldout", False, seed)
    pool += scenario_dataset("vulnerable_code", "heldout", False, seed)
    if n > len(pool):
        raise UsageError(f"only {len(pool)} held-out passages exist: ask for {len(pool)} or fewer.")
    return [ex["response"] for ex in random.Random(f"text:{seed}").sample(pool, n)]
