"""``/dashboard?token=…`` (no trailing slash) was redirected to ``/dashboard/`` with the
token dropped and no cookie set, so the browser lands on a 401: the redirect handler raises
HTTPFound before the token middleware gets to set its cookie, and the Location carries no
query string."""

from __future__ import annotations

from aiohttp import ClientSession
from pydantic import SecretStr

from pms.config import Settings
from tests.ops.conftest import serve


def test_dashboard_without_slash_and_a_token_in_the_query_opens(settings: Settings) -> None:
    own = settings.model_copy(update={"api_token": SecretStr("audit-token")})

    async def check(session: ClientSession, base: str) -> tuple[int, str]:
        async with session.get(f"{base}/dashboard?token=audit-token") as response:
            return response.status, str(response.url)

    status, url = serve(own, check)
    assert status == 200, f"/dashboard?token=<right token> ended at {url} with {status}"
