"""What every trainer shares about optimisation: the lr schedule and the AdamW parameter groups."""

from .groups import NO_DECAY_NAMES, param_groups
from .schedule import lr_at

__all__ = ["NO_DECAY_NAMES", "lr_at", "param_groups"]
