"""``payments doctor``: check the configuration and everything it points at, and say in plain
words what is wrong and how to fix it.

Each check is a small function returning one ``Finding``. A check that needs another to pass
first (the workers need the database) is ``skipped`` with the reason, never reported as a
second, confusing problem.
"""

from cli.doctor.findings import OK, PROBLEM, SKIPPED, Finding, render
from cli.doctor.services import diagnose
from cli.doctor.stripe_checks import configuration

__all__ = ["OK", "PROBLEM", "SKIPPED", "Finding", "configuration", "diagnose", "render"]
