"""The shop's Alembic branch ("shop"), which `payments db upgrade` runs with the service's."""

from pathlib import Path

VERSIONS = str(Path(__file__).parent / "versions")
