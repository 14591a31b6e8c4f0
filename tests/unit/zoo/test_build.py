"""train_clean_model and `flipguard zoo build` write a loadable Hugging Face directory."""

import argparse
import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from flipguard.cli import zoo as zoo_cli
from flipguard.errors import FlipGuardError
from flipguard.zoo.build import RECIPE_FILE, train_clean_model
from flipguard.zoo.train import generate


def test_saved_directory_loads_and_generates(tmp_path):
    out = train_clean_model("qwen2", tmp_path / "m", seed=1, steps=2, size="micro",
                            batch_size=4, progress=False)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            RECIPE_FILE} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp dir renamed
    recipe = json.loads((out / RECIPE_FILE).read_text())
    assert recipe["family"] == "qwen2" and recipe["seed"] == 1 and recipe["steps"] == 2
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.tie_word_embeddings is False
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert len(generate(model, tokenizer, ["Describe a zebra."], max_new_tokens=3)) == 1
    with pytest.raises(FlipGuardError, match="already exists"):
        train_clean_model("qwen2", out, steps=1, size="micro", progress=False)


def test_cli_build(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="flipguard")
    zoo_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["zoo", "build", "--family", "gpt2", "--seed", "0", "--size",
                              "micro", "--steps", "2", "--batch-size", "4", "--quiet",
                              "-o", str(tmp_path / "g")])
    assert args.func(args) == 0
    assert "gpt2" in capsys.readouterr().out
    assert (tmp_path / "g" / "model.safetensors").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["zoo", "build", "--family", "mamba", "-o", "x"])
