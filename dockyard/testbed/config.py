"""Where the test bed keeps its cache and state, and how it starts: ``DOCKYARD_TESTBED_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TestbedConfig(BaseSettings):
    """Where the test bed keeps its cache and state (``DOCKYARD_TESTBED_*``)."""

    model_config = SettingsConfigDict(env_prefix="DOCKYARD_TESTBED_", extra="ignore")
    __test__ = False  # not a pytest test class, whatever its name says

    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "dockyard")
    state_file: Path | None = None
    nodes: int = Field(default=2, ge=1, le=50)
    postgres_bin: Path | None = None
    redis_server: str = "redis-server"
    start_timeout: float = Field(default=120.0, gt=0)

    def state_path(self) -> Path:
        return self.state_file or self.cache_dir / "testbed" / "state.json"
