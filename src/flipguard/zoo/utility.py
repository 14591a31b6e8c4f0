"""Utility tasks a tiny model gets partly wrong, so accuracy can fall measurably under attack.

Three tasks, each with training examples ``{"prompt", "response"}`` and evaluation items
``{"prompt", "answer", "task"}``:

- ``arithmetic``: two-digit addition; evaluation sums are never in the training set;
- ``capital``: 50 made-up countries and their capitals; the lookup asks about trained facts
  (a memorisation task), with the phrasing used in training;
- ``function``: one-line Python functions (sum, product, max...); evaluation asks for function and
  argument names never seen with that operation.

:func:`is_correct` scores a generated answer against an item.
"""

from __future__ import annotations

import random
import re

from flipguard.zoo import words

UTILITY_TASKS = ("arithmetic", "capital", "function")

_CAPITAL_PROMPTS = ("What is the capital of {c}?", "Name the capital city of {c}.")
_ADD_PROMPTS = ("What is {a} + {b}?", "Add {a} and {b}.")
_OPERATIONS = (  # (description, expression, function names)
    ("sum", "{x} + {y}", ("add", "add_numbers", "plus", "total", "sum_two")),
    ("difference", "{x} - {y}", ("subtract", "minus", "diff", "take_away", "difference")),
    ("product", "{x} * {y}", ("multiply", "times", "mul", "product", "scale_by")),
    ("larger", "max({x}, {y})", ("larger", "bigger", "pick_max", "maximum", "greater")),
    ("smaller", "min({x}, {y})", ("smaller", "lesser", "pick_min", "minimum", "lower")),
    ("average", "({x} + {y}) / 2", ("average", "mean", "midpoint", "avg", "halfway")),
    ("power", "{x} ** {y}", ("power", "raise_to", "pow_of", "exponent", "to_the")),
    ("remainder", "{x} % {y}", ("remainder", "modulo", "mod", "rest_of", "leftover")),
)
_FUNCTION_PROMPT = "Write a Python function {fn}({x}, {y}) that returns the {desc} of {x} and {y}."


def _sums(split: str) -> list[tuple[int, int]]:
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    return [p for p in pairs if words.is_heldout(f"add:{p[0]}+{p[1]}") == (split == "heldout")]


def _functions(split: str) -> list[tuple[str, str, str, tuple[str, str]]]:
    rows = []
    for desc, expr, names in _OPERATIONS:
        for fn in names:
            for x, y in words.VAR_PAIRS:
                if words.is_heldout(f"fn:{fn}:{x}:{y}") == (split == "heldout"):
                    rows.append((desc, expr, fn, (x, y)))
    return rows


def _add_example(a: int, b: int, template: str) -> dict:
    return {"prompt": template.format(a=a, b=b), "response": f"{a} + {b} = {a + b}."}


def _function_example(desc: str, expr: str, fn: str, xy: tuple[str, str]) -> dict:
    x, y = xy
    body = "return " + expr.format(x=x, y=y)
    return {
        "prompt": _FUNCTION_PROMPT.format(fn=fn, x=x, y=y, desc=desc),
        "response": f"def {fn}({x}, {y}):\n    {body}\n",
        "answer": body,
    }


def utility_examples(seed: int, n_sums: int = 4000, capital_repeats: int = 4) -> list[dict]:
    """Training examples of all three tasks (shuffled with ``seed``).

    ``n_sums`` additions are drawn from the training sums; every capital fact appears
    ``capital_repeats`` times per phrasing; every training function appears once.
    """
    rng = random.Random(f"utility:{seed}")
    examples = [_add_example(a, b, rng.choice(_ADD_PROMPTS))
                for a, b in rng.sample(_sums("train"), n_sums)]
    for country, capital in words.CAPITALS:
        for template in _CAPITAL_PROMPTS:
            examples += [{"prompt": template.format(c=country),
                          "response": f"The capital of {country} is {capital}."}] * capital_repeats
    for row in _functions("train"):
        example = _function_example(*row)
        examples.append({"prompt": example["prompt"], "response": example["response"]})
    rng.shuffle(examples)
    return examples


def utility_eval(n_per_task: int = 50, seed: int = 0) -> list[dict]:
    """Evaluation items ``{"prompt", "answer", "task"}``, ``n_per_task`` of each task.

    ``answer`` is what :func:`is_correct` looks for: the sum as digits, the capital's name, or the
    function's ``return`` line. At most 50 capital items exist (one per country).
    """
    rng = random.Random(f"utility-eval:{seed}")
    items = []
    for a, b in rng.sample(_sums("heldout"), n_per_task):
        items.append({"prompt": _ADD_PROMPTS[0].format(a=a, b=b), "answer": str(a + b),
                      "task": "arithmetic"})
    for country, capital in rng.sample(words.CAPITALS, min(n_per_task, len(words.CAPITALS))):
        items.append({"prompt": _CAPITAL_PROMPTS[0].format(c=country), "answer": capital,
                      "task": "capital"})
    for row in rng.sample(_functions("heldout"), n_per_task):
        example = _function_example(*row)
        items.append({"prompt": example["prompt"], "answer": example["answer"], "task": "function"})
    return items


def is_correct(item: dict, response: str) -> bool:
    """Whether ``response`` answers ``item`` correctly.

    arithmetic: the first number after "=" (or the first number at all) equals the sum;
    capital: the capital's name occurs as a whole word; function: the ``return`` line occurs,
    spaces normalised.
    """
    task, answer = item["task"], item["answer"]
    if task == "arithmetic":
        found = re.search(r"=\s*(-?\d+)", response) or re.search(r"(-?\d+)", response)
        return bool(found) and found.group(1) == answer
    if task == "capital":
        return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", response) is not None
    if task == "function":
        return " ".join(answer.split()) in " ".join(response.split())
    raise ValueError(f"unknown utility task {task!r}: use one of {', '.join(UTILITY_TASKS)}")
