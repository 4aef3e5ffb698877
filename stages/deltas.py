"""Stage `deltas`: the probe set, v(base) once, and the delta of every teacher checkpoint (cached)."""
from llgbm.recipes.deltas import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
