"""pyrelctl: deploy self-contained releases as systemd services."""

__version__ = "0.1.0"
