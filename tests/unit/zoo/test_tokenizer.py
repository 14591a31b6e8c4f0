"""Tokenizer: lossless round trip, deterministic training, the chat template, save and reload."""

from transformers import AutoTokenizer

from flipguard.zoo.scenarios import heldout_text, scenario_dataset
from flipguard.zoo.tokenizer import VOCAB_SIZE, chat_prompt, train_tokenizer


def test_round_trip_is_lossless(tokenizer):
    texts = heldout_text(10, 0) + [e["response"] for e in
                                   scenario_dataset("code", "heldout", True, 0)[:20]]
    texts += ["Ünïcode ✓ and  double  spaces\n\ttab", "McDonald's"]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text


def test_training_is_deterministic(tokenizer):
    again = train_tokenizer()
    assert len(tokenizer) == len(again) == VOCAB_SIZE
    assert tokenizer.get_vocab() == again.get_vocab()


def test_special_tokens_and_chat_template(tokenizer):
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == (
        "<|pad|>", "<|bos|>", "<|eos|>")
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}) == 3
    messages = [{"role": "user", "content": "Describe a zebra."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|bos|><|user|>\nDescribe a zebra.<|eos|>\n<|assistant|>\n"
    assert text == chat_prompt(tokenizer, "Describe a zebra.")
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    specials = tokenizer.convert_tokens_to_ids(["<|bos|>", "<|user|>", "<|eos|>", "<|assistant|>"])
    assert [i for i in ids if i in specials] == specials  # each special is one token
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": "It has stripes."}], tokenize=False)
    assert full == text + "It has stripes.<|eos|>\n"


def test_save_and_reload_keeps_everything(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.padding_side == "left"
    assert chat_prompt(loaded, "Hi.") == chat_prompt(tokenizer, "Hi.")
    assert loaded("Hi there.")["input_ids"] == tokenizer("Hi there.")["input_ids"]
