"""Stage `diagnostics`: the zero-shot headroom of the testbed before any generator runs."""
from llgbm.recipes.diagnostics import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
