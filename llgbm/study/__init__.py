"""The study: the grid, experiments read back, the run archive, statistics, the report."""
