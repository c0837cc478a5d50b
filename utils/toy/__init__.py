"""Tiny models and the demo task: what the tests and the demo train on, and the real model from a wheel."""
