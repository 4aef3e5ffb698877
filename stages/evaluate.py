"""Stage `evaluate`: generated adapters on held-out and seen tasks against base, teacher, mean-teacher
and nearest-teacher baselines, every adapter loaded through PEFT."""
from llgbm.recipes.evaluate import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
