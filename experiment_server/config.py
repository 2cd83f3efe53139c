"""Server configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle_dir: Path
    database_url: str = Field("sqlite:///psychinterp.db", description="SQLAlchemy URL")
