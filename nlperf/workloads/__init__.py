"""User-space halves of the experiments: senders and receivers, each in its own process."""
