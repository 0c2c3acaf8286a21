from __future__ import annotations

import pytest

from tests.security.certs import Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Throwaway certificates for the whole session (made here, never committed)."""
    return make_pki(tmp_path_factory.mktemp("pki"))
