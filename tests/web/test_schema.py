"""Schemathesis against the app's own OpenAPI schema, over real HTTP: generated requests (valid
and invalid) to every operation find no 5xx but the documented 503s, no undocumented status, and
no answer that breaks its schema. The server runs in a thread with its own event loop (the
schemathesis client is synchronous)."""

from __future__ import annotations

import asyncio
import threading

import pytest

pytestmark = pytest.mark.timeout(240)

EXAMPLES_PER_OPERATION = 20


@pytest.fixture
def threaded_api(web_settings):
    from bot.headless import Headless
    from web.server import WebServer

    settings = web_settings(QA_MAX_ROUNDS=0, API_WAIT_S=3, MAX_JOBS_PER_USER=1, MAX_QUEUE=3)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-under-test", daemon=True)
    thread.start()
    runtime = Headless(settings, warm_up=False)
    server = WebServer(settings)

    async def start() -> str:
        return await server.start(await runtime.start())

    url = asyncio.run_coroutine_threadsafe(start(), loop).result(120)
    yield url.rstrip("/")

    async def stop() -> None:
        for job in list(runtime.executor._book):
            job.cancel()
        await server.stop()
        await runtime.close(grace_s=5)

    asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_openapi_schema_holds_for_generated_requests(threaded_api):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(f"{threaded_api}/openapi.json")
    chosen = [
        checks.not_a_server_error,
        checks.status_code_conformance,
        checks.content_type_conformance,
        checks.response_schema_conformance,
        checks.response_headers_conformance,
    ]
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/api/generate", "/api/jobs", "/api/jobs/{job_id}", "/generate/tags", "/generate/image/image"} <= paths
    assert {"/generate/sound", "/api/jobs/{job_id}/soundtrack", "/api/jobs/{job_id}/music.wav"} <= paths
    tried = 0
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case) -> None:
            nonlocal tried
            tried += 1
            response = case.call(base_url=threaded_api, timeout=30)
            if response.status_code == 503:  # documented: queue full / a sync wait ran out
                assert response.headers.get("retry-after")
                assert response.json()["status"] == "error"
                # a documented 503 is not a bug; everything else about it must still conform
                case.validate_response(response, checks=[c for c in chosen if c is not checks.not_a_server_error])
            else:
                case.validate_response(response, checks=chosen)

        check()
    assert tried >= len(operations)
