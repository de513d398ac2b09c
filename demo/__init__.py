"""The `make demo` walk-through (python -m demo)."""
