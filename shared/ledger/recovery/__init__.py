"""Closing the gaps: dead letters, replay, the sweeper, the reconciler and quarantine."""
