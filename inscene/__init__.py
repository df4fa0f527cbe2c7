"""inscene: the InScene dataset, the Face2Scene restorer and the InScene benchmark.

Paper: Face2Scene, arXiv 2603.16570. See DESIGN.md for layout and contracts.
"""

__version__ = "0.1.0"
