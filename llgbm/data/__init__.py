"""Task data: the tasks, the train/held-out split, probe texts, batches, the frozen prompt encoder."""
