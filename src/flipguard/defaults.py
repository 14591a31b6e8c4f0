"""Registry contents that ``flipguard <command> --help`` shows, as plain data (imports nothing).

``--help`` must not wait for torch (about a second). Most defaults it shows are constants of
modules that import nothing heavy, and the command line imports them from there. These come from
registries whose entries are classes that need torch and numba to be defined: the bitsandbytes
schemes (``flipguard.schemes.SCHEMES``), the depth a flipped weight keeps from its new walls
(each scheme's ``safe_depth``, gathered in ``flipguard.defend.flip.SAFE_DEPTH``, which says why
these values) and the defense policies (``flipguard.defend.policies.POLICIES``). They are written
out here; ``tests/unit/cli/test_defaults.py`` checks each one equals its registry, so a change to
a registry fails the suite until this file says the same.
"""

#: ``flipguard.schemes.scheme_names()``: the bitsandbytes schemes, in registry order.
BNB_SCHEMES = ("int8", "fp4", "nf4")
#: ``flipguard.defend.flip.SAFE_DEPTH``: each scheme's default ``--depth``, cell widths.
SAFE_DEPTH = {"int8": 0.1, "fp4": 0.02, "nf4": 0.02}
#: The same for every llama.cpp type (``flipguard.schemes.gguf``), cell widths.
GGUF_SAFE_DEPTH = 0.02
#: The names of ``flipguard.defend.policies.POLICIES``, in its order.
POLICY_NAMES = ("ratio", "threshold", "adaptive", "dither", "balanced", "diffuse", "random", "gaussian")
