"""Sampling from a model: generation over prompts, best-of-N (rejection sampling) and its files."""
