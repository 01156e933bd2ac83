"""One module per experiment of the paper (docs/paper.md §6); run with ``python -m reproduce <id> --scale ...``."""
