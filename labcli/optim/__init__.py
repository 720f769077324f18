"""lab's own optimizers: a paged AdamW whose state lives in pages outside the device."""

from labcli.optim.paged_adamw import PagedAdamW

__all__ = ["PagedAdamW"]
