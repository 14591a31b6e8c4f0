"""``flipguard.defaults`` says what the registries it mirrors say (it exists so that ``--help`` can
show them without importing torch; see its docstring)."""

from flipguard import defaults


def test_bnb_schemes_are_the_scheme_registry():
    from flipguard.schemes import scheme_names

    assert list(defaults.BNB_SCHEMES) == scheme_names()


def test_safe_depths_are_the_schemes_own():
    from flipguard.defend.flip import SAFE_DEPTH

    from flipguard.schemes import GGUF_SCHEMES

    bnb = {k: v for k, v in SAFE_DEPTH.items() if k not in GGUF_SCHEMES}
    assert defaults.SAFE_DEPTH == bnb
    assert list(defaults.SAFE_DEPTH) == list(bnb)  # the order --help lists them in
    assert {SAFE_DEPTH[k] for k in GGUF_SCHEMES} == {defaults.GGUF_SAFE_DEPTH}


def test_policy_names_are_the_policy_registry():
    from flipguard.defend.policies import DEFAULTS, POLICIES

    assert list(defaults.POLICY_NAMES) == list(POLICIES) == list(DEFAULTS)


def test_attack_targets_and_save_dtypes():
    import torch

    from flipguard.attack import SAVE_DTYPES, TARGETS
    from flipguard.attack.config import SAVE_DTYPE_NAMES, target_schemes

    from flipguard.plan import gguf_ftypes

    assert TARGETS == (*defaults.BNB_SCHEMES, "all", *gguf_ftypes())
    assert target_schemes("all") == list(defaults.BNB_SCHEMES)
    assert SAVE_DTYPES == {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    assert tuple(SAVE_DTYPES) == SAVE_DTYPE_NAMES
