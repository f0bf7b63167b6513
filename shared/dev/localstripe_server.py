"""Run localstripe bound to one address (127.0.0.1 by default).

Workaround, dev and tests only: localstripe's own ``localstripe`` command always listens on every
interface (``::``). We run its aiohttp app ourselves so the stand-in is reachable from this machine
only.
"""

from __future__ import annotations

import argparse
import logging

from aiohttp import web
from localstripe import resources
from localstripe.server import app


def _skip_disk_snapshots() -> None:
    # Workaround: localstripe pickles its whole store to /tmp/localstripe.pickle on every write,
    # which slows it down as objects pile up and makes two instances overwrite one file. We always
    # start from scratch, so the snapshot is never read: skip writing it.
    resources.Store.dump_to_disk = lambda self: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    args = parser.parse_args()
    # Started from scratch every time (like `localstripe --from-scratch`): nothing is loaded.
    _skip_disk_snapshots()
    logging.basicConfig(level=logging.INFO)
    web.run_app(app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
