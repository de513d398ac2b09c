"""System tests: pyrelctl against a real systemd booted in a container."""
