"""llgbm: a prompt-conditioned LoRA generator supervised by teacher weights and by behaviour.

Layers, bottom to top (a module imports only from its own layer or those below it):
infra (files, errors, provenance) -> core (pure torch) -> data -> artifacts (model and adapter files)
-> config -> recipes (one per stage) and study -> stage, cli.
"""
