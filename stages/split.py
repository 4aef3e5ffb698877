"""Stage `split`: the training and held-out tasks, resolved once into data/split.json."""
from llgbm.recipes.split import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
