"""The chaos suite of make chaos: the whole stack under real faults, with a computed verdict
(lost 0, applied twice 0)."""
