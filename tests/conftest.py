"""Shared fixtures: every test gets its own stores, settings restored afterwards, and runs on the
anyio backend named by ASYNCFLOW_TEST_BACKEND (asyncio by default; `make test` also runs trio)."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterator

import pytest

import asyncflow as af

BACKEND = os.environ.get("ASYNCFLOW_TEST_BACKEND", "asyncio")


@pytest.fixture
def anyio_backend() -> str:
    return BACKEND


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path, monkeypatch) -> Iterator[None]:
    saved = copy.copy(af.settings.__dict__)
    af.settings.store = str(tmp_path / "default-store")
    af.settings.execution_summary = False
    monkeypatch.chdir(tmp_path)
    yield
    af.settings.__dict__.clear()
    af.settings.__dict__.update(saved)


@pytest.fixture
def store(tmp_path) -> str:
    """A fresh local-disk store."""
    return str(tmp_path / "store")


@pytest.fixture
def mem_store() -> str:
    """A fresh in-memory store."""
    return f"memory://test-{uuid.uuid4().hex}"


@pytest.fixture(params=["local", "memory"])
def any_store(request, tmp_path) -> str:
    """Each test using it runs once per store kind."""
    if request.param == "local":
        return str(tmp_path / "store")
    return f"memory://test-{uuid.uuid4().hex}"
