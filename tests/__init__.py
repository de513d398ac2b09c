"""pyrelctl's test suite."""
