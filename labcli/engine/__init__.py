"""The one training engine and the run directory every verb writes."""
