"""Analysis of results: atom-model metrics, volume metrics."""
