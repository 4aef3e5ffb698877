"""Stage `embed`: the frozen encoder's embedding of every prompt (train and test) of every task."""
from llgbm.recipes.embed import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
