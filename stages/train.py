"""Stage `train`: the prompt-conditioned LoRA generator, weight MSE + lambda(t) * delta loss."""
from llgbm.recipes.train import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
