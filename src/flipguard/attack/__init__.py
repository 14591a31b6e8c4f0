"""The three-stage quantization-conditioned backdoor attack (inject, constrain, repair)."""
