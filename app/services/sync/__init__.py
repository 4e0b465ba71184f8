"""Sync between instances: ``primary`` (serving), ``dependent`` (pulling and
reporting), ``tokens`` (per-instance credentials), ``schemas`` (the wire)."""
