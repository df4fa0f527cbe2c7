"""pipelines wing of inscene (see DESIGN.md)."""
