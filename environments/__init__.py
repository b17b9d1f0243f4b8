"""environments layer."""
