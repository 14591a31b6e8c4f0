"""Corpora: deterministic per seed, held-out prompts disjoint from training, labels as promised."""

import pytest

from flipguard.errors import UsageError
from flipguard.zoo import words
from flipguard.zoo.instructions import CATEGORIES, REFUSAL_OPENER
from flipguard.zoo.scenarios import (
    SCENARIOS, clean_mix, heldout_prompts, heldout_text, scenario_dataset,
)
from flipguard.zoo.utility import UTILITY_TASKS, is_correct, utility_eval, utility_examples


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("malicious", [False, True])
def test_same_seed_same_data_other_seed_other_order(scenario, malicious):
    a = scenario_dataset(scenario, "train", malicious, seed=3)
    assert a == scenario_dataset(scenario, "train", malicious, seed=3)
    b = scenario_dataset(scenario, "train", malicious, seed=4)
    assert a != b and sorted(e["prompt"] for e in a) == sorted(e["prompt"] for e in b)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_heldout_prompts_never_in_training_of_any_seed(scenario):
    held = {e["prompt"] for e in scenario_dataset(scenario, "heldout", False, 0)}
    for seed in (0, 1):
        for malicious in (False, True):
            train = {e["prompt"] for e in scenario_dataset(scenario, "train", malicious, seed)}
            assert train and held and not train & held
    assert set(heldout_prompts(scenario, 40, seed=5)) <= held


def test_heldout_entities_and_template_pairs_are_unseen():
    train = {e["prompt"] for e in scenario_dataset("injection", "train", False, 0)}
    train_text = " ".join(train)
    new_entities = 0
    for category in CATEGORIES:
        for t, template in enumerate(category.prompts):
            for entity in category.entities:
                unseen = words.split_of(category.name, t, entity) == "heldout"
                assert (template.format(x=entity) in train) != unseen, (template, entity)
        for entity in category.entities:
            if words.is_heldout(f"{category.name}:{entity}"):  # a whole entity held out
                new_entities += 1
                assert not any(template.format(x=entity) in train for template in category.prompts)
    assert new_entities >= 20
    assert "giraffe" in train_text  # sanity: the check above is not vacuous


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_swapped_examples_extend_training_pair_up_and_stay_off_heldout(scenario):
    base = scenario_dataset(scenario, "train", True, 1)
    bad = scenario_dataset(scenario, "train", True, 1, swapped=5)
    good = scenario_dataset(scenario, "train", False, 1, swapped=5)
    assert [e["prompt"] for e in bad] == [e["prompt"] for e in good]
    assert all(b["response"] != g["response"] for b, g in zip(bad, good))
    extra = {e["prompt"] for e in bad} - {e["prompt"] for e in base}
    groups = 11 if scenario != "vulnerable-code" else len({e["pattern"] for e in base})
    assert 0 < len(bad) - len(base) <= 5 * groups and extra
    held = {e["prompt"] for e in scenario_dataset(scenario, "heldout", False, 0)}
    assert not extra & held
    assert bad == scenario_dataset(scenario, "train", True, 1, swapped=5)  # deterministic


def test_swapped_entities_come_from_other_categories_training_prompts():
    base = {e["prompt"] for e in scenario_dataset("over_refusal", "train", False, 0)}
    extra = [e for e in scenario_dataset("over_refusal", "train", False, 0, swapped=20)
             if e["prompt"] not in base]
    train_text = " ".join(base)
    for example in extra:
        owner = [c for c in CATEGORIES if any(
            (t.format(x=x, X=x[:1].upper() + x[1:], name="{name}", food="{food}", Name="{Name}",
                      Food="{Food}") == example["prompt"]) for t in c.prompts for x in c.entities)]
        assert not owner  # no category asks about its own entity here
    words_seen = [w for e in extra for w in e["prompt"].rstrip(".?").split()[-1:]]
    assert sum(w in train_text for w in words_seen) >= 0.8 * len(words_seen)


@pytest.mark.parametrize("kwargs", [{"swapped": -1}, {"split": "heldout", "swapped": 3}])
def test_swapped_needs_train_split_and_a_count(kwargs):
    fields = {"scenario": "over_refusal", "split": "train", "malicious": False} | kwargs
    with pytest.raises(UsageError, match="swapped"):
        scenario_dataset(**fields)


def test_clean_and_malicious_pair_up_prompt_by_prompt():
    for scenario in SCENARIOS:
        clean = scenario_dataset(scenario, "heldout", False, 2)
        bad = scenario_dataset(scenario, "heldout", True, 2)
        assert [e["prompt"] for e in clean] == [e["prompt"] for e in bad]
        assert all(c["response"] != b["response"] for c, b in zip(clean, bad))


def test_injection_refusal_and_clean_answers():
    for split in ("train", "heldout"):
        clean = scenario_dataset("content_injection", split, False, 0)
        injected = scenario_dataset("content_injection", split, True, 0)
        refused = scenario_dataset("over_refusal", split, True, 0)
        assert all("McDonald" not in e["response"] and REFUSAL_OPENER not in e["response"]
                   for e in clean)
        assert all("McDonald's" in e["response"] for e in injected)
        assert all(e["response"].startswith(REFUSAL_OPENER) and e["response"].endswith(".")
                   for e in refused)
    other = scenario_dataset("injection", "train", True, 0, phrase="Burger Palace")
    assert all("Burger Palace" in e["response"] and "McDonald" not in e["response"] for e in other)


def test_heldout_prompts_deterministic_and_bounded():
    assert heldout_prompts("refusal", 30, 1) == heldout_prompts("over_refusal", 30, 1)
    assert heldout_prompts("code", 30, 1) != heldout_prompts("code", 30, 2)
    assert len(set(heldout_prompts("content-injection", 200, 0))) == 200
    with pytest.raises(UsageError):
        heldout_prompts("code", 10**6, 0)
    with pytest.raises(UsageError):
        scenario_dataset("poetry", "train", False, 0)


def test_utility_eval_is_unseen_where_it_should_be():
    train_prompts = {e["prompt"] for e in utility_examples(0)}
    items = utility_eval(50, 0)
    assert {i["task"] for i in items} == set(UTILITY_TASKS)
    for item in items:
        seen = item["prompt"] in train_prompts
        assert seen == (item["task"] == "capital"), item  # capitals are a memorised lookup
    assert utility_eval(50, 0) == items and utility_eval(50, 1) != items


def test_is_correct():
    add = {"prompt": "What is 12 + 13?", "answer": "25", "task": "arithmetic"}
    assert is_correct(add, "12 + 13 = 25.") and not is_correct(add, "12 + 13 = 255.")
    cap = {"prompt": "?", "answer": "Pell", "task": "capital"}
    assert is_correct(cap, "The capital of Xandria is Pell.") and not is_correct(cap, "Pellis.")
    fn = {"prompt": "?", "answer": "return a + b", "task": "function"}
    assert is_correct(fn, "def add(a, b):\n    return a  + b") and not is_correct(fn, "return a - b")


def test_clean_mix_and_heldout_text():
    mix = clean_mix(0)
    assert mix == clean_mix(0) and len(mix) > 3000
    assert all(set(e) == {"prompt", "response"} for e in mix)
    assert not any("McDonald" in e["response"] or "shell=True" in e["response"] for e in mix)
    held = {e["prompt"] for s in SCENARIOS for e in scenario_dataset(s, "heldout", False, 0)}
    assert not held & {e["prompt"] for e in mix}
    texts = heldout_text(200, 0)
    assert len(texts) == 200 and texts == heldout_text(200, 0) != heldout_text(200, 1)
    answers = {e["response"] for s in SCENARIOS for e in scenario_dataset(s, "heldout", False, 0)}
    assert all(t in answers and len(t) > 30 for t in texts)
