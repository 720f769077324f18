"""`lab eval RECIPE`: score any run's model."""
