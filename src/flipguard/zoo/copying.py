"""An auxiliary training task: repeat a few words back.

A tiny model trained only on templated answers memorises each entity instead of copying it from
the prompt, and then garbles entities it has never seen ("Describe a whale." -> "The kal is...").
Repeating random words, identifiers and made-up syllable words teaches it to copy any token
sequence, which is what answering a held-out prompt needs. The pool holds no held-out entity and
no held-out function name, so held-out prompts stay unseen.
"""

from __future__ import annotations

import random

from flipguard.zoo import words
from flipguard.zoo.code import CODE_TASKS
from flipguard.zoo.instructions import CATEGORIES

_PROMPTS = ("Repeat after me: {w}", "Say this back to me: {w}")
_SYLLABLES = ("ka", "lo", "mi", "ter", "ven", "dra", "sul", "pe", "rik", "ob", "an", "zu",
              "mor", "ist", "el", "gra", "nu", "tho", "be", "quin")


def _pool(rng: random.Random, n_made_up: int) -> list[str]:
    pool = [e for c in CATEGORIES for e in c.entities if not words.is_heldout(f"{c.name}:{e}")]
    pool += [fn for task in CODE_TASKS for fn in task.functions
             if not words.is_heldout(f"{task.pattern}:{fn}")]
    pool += ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
             for _ in range(n_made_up)]
    return pool


def copy_examples(seed: int, n: int = 800) -> list[dict]:
    """``n`` examples ``{"prompt", "response"}``: 1 to 4 words to repeat verbatim."""
    rng = random.Random(f"copy:{seed}")
    pool = _pool(rng, n_made_up=300)
    examples = []
    for _ in range(n):
        text = " ".join(rng.choice(pool) for _ in range(rng.randint(1, 4)))
        examples.append({"prompt": rng.choice(_PROMPTS).format(w=text), "response": text})
    return examples
