"""Models in: dtype, loading (full / LoRA / QLoRA / DoRA), GGUF sources, reward sources, adapter merging."""
