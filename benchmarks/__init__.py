"""benchmarks wing of inscene (see DESIGN.md)."""
