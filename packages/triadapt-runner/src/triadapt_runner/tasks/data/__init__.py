"""Tasks, data sources and loading."""
