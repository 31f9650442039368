"""orbit-server: one process with the API, the conductor and (later) the dashboard."""
