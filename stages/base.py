"""Stage `base`: the base model and tokenizer in models/base (tiny Qwen2 built here, or a hub model)."""
from llgbm.recipes.base import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
