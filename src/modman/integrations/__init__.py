"""modman inside other frameworks: ``modman.integrations.huggingface`` (needs ``pip install modman[hf]``)."""
