"""pyvmm benchmarks: scripts run by hand, never collected by pytest."""
