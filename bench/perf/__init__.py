"""The benchmark of make bench, bench-small, bench-capacity and bench-ledger: our pipeline
beside bare and naive comparators, each figure named with the command, commit and machine."""
