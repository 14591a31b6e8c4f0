"""Test fakes shared by the tests and the benchmarks (never imported by the package).

- ``checkpoints``: tiny random-init Hugging Face checkpoints of every family;
- ``synthetic``: attacked weights without training (a simulated PGD repair into the boxes);
- ``fixtures``: attacked and dequantized checkpoints made from clean ones.

Benchmarks put the repository root on ``sys.path`` to import them (``from tests.support...``).
"""
