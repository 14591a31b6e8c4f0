"""The fused numba kernels of the schemes: cells, wall histograms, rounding errors, flips.

Each kernel evaluates the same float32 formulas as the scheme's torch reference (``schemes.base``,
``schemes.fourbit``, ``schemes.int8``), operation for operation, in one pass over a chunk, and
``tests/unit/schemes/kernels/`` checks each one against that reference element for element or bin
for bin. The scan and the defense never call these modules by scheme: they call the scheme's own
methods (``Scheme.chunk_cells``, ``histograms``, ``rounding_errors``, ``normalize_at``,
``kernel_row``...), which NF4/FP4 and INT8 implement with the kernels here and any other scheme
inherits in torch.

- ``floats``    -- float16/bfloat16 rounding, ulp steps and casts on a float32's bits;
- ``reads``     -- where a kernel reads a tensor from (stored bits or a torch read), finiteness;
- ``histogram`` -- how a weight is binned by wall distance (the bins come from the scan);
- ``fourbit``, ``int8`` -- each family's cells, histograms, rounding errors, row distances;
- ``flip``      -- the flip across a wall under up to three schemes, its check, the writes;
- ``rows``      -- the one-pass threshold defense of a matrix, row by row;
- ``threads``   -- one thread for small work, serial kernels side by side;
- ``cache``     -- the on-disk cache of compiled kernels, stale when any file here changes.

Every kernel is defined in this folder and inlines nothing from outside it, which is what lets
``cache`` key the compiled kernels by this folder's sources alone.
"""
