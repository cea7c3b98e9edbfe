"""Tasks: what each task's data looks like, how it is loaded, and the task kinds that train and score it."""
