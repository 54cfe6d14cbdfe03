"""The hub's tables. Only queue/store.py writes job rows; only hub services write the rest."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(256))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    # Fair scheduling: the dispatch counter value when this user's job was last leased.
    last_dispatch: Mapped[int] = mapped_column(Integer, default=0)


class ApiToken(Base):
    """A user's token for scripts; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LoginSession(Base):
    """A browser login. The cookie holds a random id; only its SHA-256 is stored, so deleting
    the row ends the session everywhere."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class WorkerToken(Base):
    """A credential for GPU workers; only its SHA-256 is stored."""

    __tablename__ = "worker_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Worker(Base):
    __tablename__ = "workers"
    __table_args__ = (UniqueConstraint("token_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("worker_tokens.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    comfyui_version: Mapped[str] = mapped_column(String(64), default="")
    gpu: Mapped[str] = mapped_column(String(256), default="")
    vram_total: Mapped[int] = mapped_column(Integer, default=0)
    catalog_hash: Mapped[str] = mapped_column(String(64), default="")
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    registered_at: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)


class Catalog(Base):
    """A worker catalog (object_info + model lists), gzip JSON, stored once per content hash."""

    __tablename__ = "catalogs"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_seq", "state", "seq"), Index("ix_jobs_user", "user_id"))

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    extra_data: Mapped[str] = mapped_column(Text, default="{}")
    client_id: Mapped[str] = mapped_column(String(128), default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    instructor: Mapped[bool] = mapped_column(Boolean, default=False)
    run_next_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    requirements: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[float] = mapped_column(Float)
    leased_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    outputs: Mapped[str] = mapped_column(Text, default="{}")


class JobEvent(Base):
    """Job history in order: hub state changes (seq NULL) and relayed ComfyUI events."""

    __tablename__ = "job_events"
    __table_args__ = (UniqueConstraint("job_id", "attempt", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)


class Output(Base):
    """A file a worker delivered for a job attempt, stored under the job owner's folder."""

    __tablename__ = "outputs"
    __table_args__ = (UniqueConstraint("job_id", "attempt", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    attempt: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(512))
    node_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    subfolder: Mapped[str] = mapped_column(String(512))
    filename: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)


class HubState(Base):
    """Small durable key/value facts: scheduling policy, dispatch counter."""

    __tablename__ = "hub_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class CloudResource(Base):
    """A billable thing we created at the cloud provider: an instance or a volume.

    Times are the provider's clock (creation from its records, end from its answer to the
    delete), so the costs computed from these rows agree with its bill."""

    __tablename__ = "cloud_resources"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the provider's id
    kind: Mapped[str] = mapped_column(String(16))  # instance | volume
    role: Mapped[str] = mapped_column(String(16))  # gpu | os | scratch | sfs
    name: Mapped[str] = mapped_column(String(128), index=True)
    spec: Mapped[str] = mapped_column(String(64), default="")  # instance type or volume type
    size_gb: Mapped[int] = mapped_column(Integer, default=0)
    price_per_hour: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
