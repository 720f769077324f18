"""lab: run real ML experiments end to end from one command tree."""

__version__ = "0.1.0"
