from __future__ import annotations

import pytest

from tests.deploy.manifests import OVERLAYS, Rendered, render


@pytest.fixture(scope="session")
def rendered_overlays() -> dict[str, Rendered]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, rendered_overlays: dict[str, Rendered]) -> Rendered:
    overlay: str = request.param
    return rendered_overlays[overlay]
