"""Background processes: the clock (enqueues only) and RQ jobs (do the work)."""
