"""MLflow tracking: runs and their artifacts, results, comparison tables, significance, plots."""
