"""Stage `tasks`: the built-in task family (or the user's task files) as data/tasks.json."""
from llgbm.recipes.tasks import run
from llgbm.stage import run_stage

if __name__ == "__main__":
    run_stage(run)
