"""Stage `teachers`: per task, the last K snapshots of a PEFT LoRA trajectory from one shared init."""
from llgbm.recipes.teachers import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
