"""restorer wing of inscene (see DESIGN.md)."""
