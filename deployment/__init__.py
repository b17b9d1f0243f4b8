"""deployment layer."""
