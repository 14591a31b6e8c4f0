"""The tiny model zoo: synthetic corpora, a local tokenizer, tiny causal LMs of seven families,
and the training loop shared with the attack.

Public API (each lives in a file named after what it holds)::

    scenario_dataset(scenario, split, malicious, seed, phrase)  -> [{"prompt", "response"}]
    heldout_prompts(scenario, n, seed)                          -> [prompt]
    clean_mix(seed)                 utility_examples(seed)      heldout_text(n, seed)
    utility_eval(n_per_task, seed)  -> [{"prompt", "answer", "task"}];  is_correct(item, answer)
    train_tokenizer(vocab_size, seed) -> PreTrainedTokenizerFast with a chat template
    build_model(family, vocab_size, size, seed, tokenizer)
    train_causal_lm(model, tokenizer, examples, steps, lr, batch_size, seed,
                    trainable_params, after_step, progress) -> losses
    generate(model, tokenizer, prompts, max_new_tokens, batch_size) -> [answer]
    train_clean_model(family, out_dir, seed, steps) -> out_dir
"""

from typing import TYPE_CHECKING

from flipguard.lazy import lazy_exports

if TYPE_CHECKING:
    from flipguard.zoo.build import CleanRecipe, train_clean_model
    from flipguard.zoo.code import CODE_PATTERNS, CODE_TASKS
    from flipguard.zoo.instructions import REFUSAL_OPENER
    from flipguard.zoo.models import FAMILIES, SIZES, build_model
    from flipguard.zoo.scenarios import (
        DEFAULT_PHRASE, SCENARIOS, clean_mix, heldout_prompts, heldout_text, scenario_dataset,
    )
    from flipguard.zoo.tokenizer import chat_prompt, train_tokenizer
    from flipguard.zoo.train import encode_example, encode_examples, generate, train_causal_lm
    from flipguard.zoo.utility import UTILITY_TASKS, is_correct, utility_eval, utility_examples

__all__ = [
    "CODE_PATTERNS", "CODE_TASKS", "CleanRecipe", "DEFAULT_PHRASE", "FAMILIES", "REFUSAL_OPENER",
    "SCENARIOS", "SIZES", "UTILITY_TASKS", "build_model", "chat_prompt", "clean_mix",
    "encode_example", "encode_examples", "generate", "heldout_prompts", "heldout_text",
    "is_correct", "scenario_dataset", "train_causal_lm", "train_clean_model", "train_tokenizer",
    "utility_eval", "utility_examples",
]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
