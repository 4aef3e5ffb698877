"""The study: its arms (arms), queueing them (grid), the experiments read back (experiments), the run archive,
statistics (stats), the comparison (report), the plot, generated document blocks (blocks) and the commands that
write them (compare, diagnostics_table)."""
