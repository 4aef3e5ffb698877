"""Stage `check`: every param and task file checked before any other stage runs."""
from llgbm.recipes.check import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
