"""`llgbm bench`: the project's batched paths timed against the ways they replace, side by side.

One module per benchmark, each calling the recipes' own functions, and one timing helper for all:
- `delta`: the batched delta against the loop, the unfused product, PEFT and the base-model floor (the
  deltas stage's own path against PEFT beside it), at the embedded default's and Qwen2.5's shapes;
- `train`: seconds per training step of every objective, through the training recipe's `training_step`;
- `teachers`: teachers trained together against one after another (the teachers recipe's two paths);
- `evaluate`: the evaluate recipe's `AdapterMeter`, batched against PEFT;
- `timing`: `interleaved`, which every bench times its compared paths through (A B A B ..., a warm-up
  each, medians);
- `world`: params' tasks and an untrained base written by the base recipe, for the benches that need files.

Nothing is imported here: `llgbm.bench.timing` loads without the recipes.
"""
