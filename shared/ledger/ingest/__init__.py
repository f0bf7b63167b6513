"""What a worker does with a queued event: decode it, record it once, apply its runs."""
