"""Two-process serving: an HTTP collector process beside the process that owns the store."""
