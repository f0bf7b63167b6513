"""Handler runs: applying a handler (the one way), a run's row, a run as its own task, reporting."""
