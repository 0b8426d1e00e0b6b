import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Loaders remember local copies in the cache dir: keep the project's data/cache out of the tests."""
    monkeypatch.setenv("GHRS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
