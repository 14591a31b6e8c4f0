"""A byte-level BPE tokenizer trained here, wrapped as a ``PreTrainedTokenizerFast`` with a chat
template, so the zoo's models are prompted exactly like real instruct models::

    text = tokenizer.apply_chat_template([{"role": "user", "content": q}],
                                         add_generation_prompt=True, tokenize=False)

Turn format (one special token per role; the end-of-sequence token closes every turn)::

    <|bos|><|user|>
    What is 2 + 3?<|eos|>
    <|assistant|>
    2 + 3 = 5.<|eos|>
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from flipguard.zoo.scenarios import SCENARIOS, scenario_dataset
from flipguard.zoo.utility import utility_examples

VOCAB_SIZE = 1536  # special tokens included; 64 * 24, so embedding rows split into whole blocks
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Texts the tokenizer learns merges from: every training prompt and answer, clean and
    malicious (the default phrase), and the utility tasks. No held-out text."""
    texts = []
    for scenario in SCENARIOS:
        for malicious in (False, True):
            for ex in scenario_dataset(scenario, "train", malicious, seed):
                texts += [ex["prompt"], ex["response"]]
    for ex in utility_examples(seed):
        texts += [ex["prompt"], ex["response"]]
    return texts


def train_tokenizer(vocab_size: int = VOCAB_SIZE, seed: int = 0) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE tokenizer (deterministic: same corpus, same merges) and wrap it.

    Padding is on the left (what batched generation needs); the training loop pads by hand.
    """
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(tokenizer_corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=ROLE_TOKENS,
        padding_side="left",
        model_max_length=256,  # the models' positions
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def chat_prompt(tokenizer, prompt: str) -> str:
    """``prompt`` as one user turn plus the assistant header, through the tokenizer's template."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
