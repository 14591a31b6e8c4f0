"""Test fakes shared across test folders (tiny checkpoints, synthetic files); never imported by the package."""
