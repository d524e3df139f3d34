"""Programs the tests run as separate processes (workers they can kill)."""
