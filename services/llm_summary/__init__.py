"""Summary task: a one-line summary of (final input, reply)."""
