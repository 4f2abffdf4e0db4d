"""pytest hooks and options only (being written)."""
