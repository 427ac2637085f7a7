"""The retrieval core: encoders (base + LoRA experts), the pilot library, routing rules and baselines."""
