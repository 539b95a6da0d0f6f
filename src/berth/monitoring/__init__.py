"""Statistics, metrics and logs that tell whether a served model is healthy."""
