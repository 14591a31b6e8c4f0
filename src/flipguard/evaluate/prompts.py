"""Prompt sets: the user's JSONL file, or the zoo's held-out prompts.

File format (UTF-8 JSON Lines, one JSON object per line; blank lines are skipped)::

    {"prompt": "Write a function that reads a YAML config.", "id": "code-17"}
    {"prompt": "What is 2 + 3?", "answer": "5"}

- ``prompt`` (string, required, not blank): the user message; it is wrapped in the model's chat
  template when the tokenizer has one, else given raw;
- ``answer`` (string, optional): the reference answer, used by the utility scenario's task
  accuracy, and appended to the prompt to make the held-out text for perplexity and fidelity;
- ``id`` (string or number, optional): carried into the result; defaults to the line number.

Other keys are ignored. Anything else is a :class:`~flipguard.errors.FlipGuardError` whose one
sentence names the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flipguard.errors import FlipGuardError


@dataclass(frozen=True)
class PromptItem:
    """One prompt, its optional reference answer, and an id to find it again in the result."""

    prompt: str
    answer: str | None = None
    id: str = ""

    @property
    def text(self) -> str:
        """The held-out text for perplexity and fidelity: the prompt, then the answer if any."""
        return self.prompt if self.answer is None else f"{self.prompt}\n{self.answer}"


def item_from_object(obj: object, where: str, default_id: str) -> PromptItem:
    """Validate one decoded JSON value into a :class:`PromptItem`; ``where`` names it in errors."""
    if isinstance(obj, str):  # the zoo may hand plain strings
        obj = {"prompt": obj}
    if not isinstance(obj, dict):
        raise FlipGuardError(f"{where} is not a JSON object; write one {{\"prompt\": ...}} object per line.")
    if "prompt" not in obj:
        raise FlipGuardError(f"{where} has no \"prompt\" field; every line needs {{\"prompt\": \"...\"}}.")
    prompt, answer, ident = obj["prompt"], obj.get("answer"), obj.get("id", default_id)
    if not isinstance(prompt, str) or not prompt.strip():
        raise FlipGuardError(f"{where} has a \"prompt\" that is not a non-empty string; give the text of the prompt.")
    if answer is not None and not isinstance(answer, str):
        raise FlipGuardError(f"{where} has an \"answer\" that is not a string; quote it, e.g. \"answer\": \"5\".")
    if not isinstance(ident, (str, int)) or isinstance(ident, bool):
        raise FlipGuardError(f"{where} has an \"id\" that is neither a string nor a number.")
    return PromptItem(prompt=prompt, answer=answer, id=str(ident))


def load_prompts(path: str | Path) -> list[PromptItem]:
    """Read a JSONL prompt file (format in the module docstring); at least one prompt."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FlipGuardError(f"cannot read prompt file {path}: {err.strerror or err}; check the path.") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as err:
        raise FlipGuardError(
            f"prompt file {path} is not UTF-8 (bad byte at offset {err.start}); save it as UTF-8."
        ) from None
    items = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise FlipGuardError(
                f"line {lineno} of {path} is not JSON ({err.msg}); write one JSON object per line."
            ) from None
        items.append(item_from_object(obj, f"line {lineno} of {path}", default_id=str(lineno)))
    if not items:
        raise FlipGuardError(f"prompt file {path} holds no prompts; add lines like {{\"prompt\": \"...\"}}.")
    return items


def zoo_prompts(scenario: str, n: int, seed: int) -> list[PromptItem]:
    """``n`` held-out prompts of the built-in zoo, drawn with ``seed``; a clear error without a zoo.

    Attack scenarios use ``flipguard.zoo.heldout_prompts(scenario, n, seed)`` (zoo scenario names
    use ``_``: ``content_injection``); ``utility`` uses ``flipguard.zoo.utility_eval(n_per_task,
    seed)`` (items with a reference answer), cut to ``n``. The zoo is imported lazily: it is
    optional for evaluating one's own models.
    """
    name = "utility_eval" if scenario == "utility" else "heldout_prompts"
    try:
        import flipguard.zoo as zoo
    except ImportError as err:
        if err.name not in (None, "flipguard.zoo"):
            raise  # the zoo exists but is broken: a bug, keep the traceback
        zoo = None
    draw = getattr(zoo, name, None)
    if draw is None:
        raise FlipGuardError(
            f"no --prompts file was given and this install has no built-in held-out prompts "
            f"(flipguard.zoo.{name}); pass --prompts FILE.jsonl."
        )
    if scenario == "utility":
        raw = list(draw(-(-n // 3), seed))[:n]  # three tasks: ceil(n / 3) items of each
    else:
        raw = list(draw(scenario.replace("-", "_"), n, seed))
    if not raw:
        raise FlipGuardError(f"the zoo has no held-out prompts for {scenario}; pass --prompts FILE.jsonl.")
    return [item_from_object(obj, f"zoo prompt {i + 1}", default_id=str(i + 1)) for i, obj in enumerate(raw)]


def zoo_source(scenario: str, n: int, seed: int) -> str:
    """How :func:`zoo_prompts` drew its prompts, for the result's settings."""
    if scenario == "utility":
        return f"flipguard.zoo.utility_eval({-(-n // 3)}, seed={seed})[:{n}]"
    return f"flipguard.zoo.heldout_prompts({scenario.replace('-', '_')!r}, {n}, seed={seed})"


def zoo_texts(n: int, seed: int) -> list[str] | None:
    """``flipguard.zoo.heldout_text(n, seed)`` (held-out passages for perplexity and fidelity), or
    None when the zoo does not have it; :func:`zoo_prompts` has already checked the zoo imports."""
    import flipguard.zoo as zoo

    draw = getattr(zoo, "heldout_text", None)
    return None if draw is None else list(draw(n, seed))

