"""Data sets shipped inside the package, and readers for user files."""
