"""What the web process does with a webhook delivery: verify it and put it on the queue."""
