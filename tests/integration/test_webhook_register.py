"""`payments webhook register` subscribes to what the handler registry needs, so a handler
registered for a new event type receives its events without editing a list somewhere else."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devtools.processes import (
    REPO_ROOT,
    Process,
    ServedApp,
    free_port,
    port_open,
    python_module,
    run_payments,
    wait_until,
)
from tests.support.newcomer_handlers import NEW_EVENT_TYPE


class Receiver:
    """Records the type of every event posted to it."""

    def __init__(self) -> None:
        self.types: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.types.append(json.loads(body)["type"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"received": true}']


@pytest.fixture
def own_stand_in() -> Iterator[str]:
    # Its own stand-in: registering replaces the webhook the session's stand-in posts to.
    port = free_port()
    proc = Process(
        "localstripe-register",
        python_module("devtools.localstripe_server", "--port", str(port)),
        dict(os.environ),
    )
    try:
        wait_until(lambda: port_open(port), 20, "localstripe start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def test_a_handler_for_a_new_type_is_subscribed(
    base_env: dict[str, str], own_stand_in: str
) -> None:
    receiver = Receiver()
    served = ServedApp(receiver)
    env = {
        **base_env,
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO_ROOT),
        "STRIPE_API_BASE": own_stand_in,
        "HANDLER_MODULES": "tests.support.newcomer_handlers",
    }
    try:
        result = run_payments("webhook", "register", "--url", f"{served.url}/webhook", env=env)
        assert result.returncode == 0, result.stderr
        auth = (base_env["STRIPE_SECRET_KEY"], "")
        # A type no handler needs first, then the new handler's: only the second may arrive.
        requests.post(f"{own_stand_in}/v1/products", data={"name": "n"}, auth=auth, timeout=10)
        requests.post(f"{own_stand_in}/v1/customers", data={}, auth=auth, timeout=10)
        wait_until(lambda: NEW_EVENT_TYPE in receiver.types, 20, f"{NEW_EVENT_TYPE} delivered")
        assert "product.created" not in receiver.types
    finally:
        served.stop()
