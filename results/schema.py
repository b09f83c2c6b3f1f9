"""ORM schema of the results store (SQLAlchemy 2.x). One row per number, so the
dashboard and the leaderboard can pivot freely; the schema version lives in ``meta``."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SCHEMA_VERSION = 3  # 2: run liveness, jobs.worker; 3: jobs.spec_version/resolved_json, metrics.spread (migrations.py)


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    """One ``harness run`` invocation."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    matrix_name: Mapped[str] = mapped_column(String(200))
    matrix_path: Mapped[str] = mapped_column(Text)
    matrix_hash: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # v2. A run is live while its status is 'running' and its driver heartbeats; the next
    # run marks a dead run's unfinished jobs 'interrupted' (results.store.Store.claim).
    executor: Mapped[str | None] = mapped_column(String(100), nullable=True)  # local | processes(N) | ray
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the driver's, on ``host``
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # running|finished|interrupted|died


class Job(Base):
    """One attempt at one job spec. Reruns add attempts; history is kept."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("spec_hash", "attempt"), Index("ix_jobs_status", "status"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    group_hash: Mapped[str] = mapped_column(String(64), index=True)  # the spec without its seed
    attempt: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # pending|running|done|failed|interrupted
    spec_json: Mapped[str] = mapped_column(Text)
    # Denormalized from the spec for queries.
    model: Mapped[str] = mapped_column(String(300))
    task: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(100))
    method_label: Mapped[str] = mapped_column(String(300))
    sparsity: Mapped[float] = mapped_column(Float)
    seed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # one line
    traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    harness_version: Mapped[str] = mapped_column(String(50))
    versions_json: Mapped[str] = mapped_column(Text)  # python, platform and package versions
    protocol_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(300), nullable=True)  # v2: "host:pid device" that ran it
    # v3. The spec version its hash was computed under (NULL: 1, before versions), and
    # what hub references resolved to when it ran (recorded, not hashed).
    spec_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resolved_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class MetricRow(Base):
    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    split: Mapped[str] = mapped_column(String(50))
    value: Mapped[float] = mapped_column(Float)
    higher_is_better: Mapped[bool] = mapped_column(Boolean)
    spread: Mapped[float | None] = mapped_column(Float, nullable=True)  # v3: interquartile range of repeats (speed)


class LayerStat(Base):
    __tablename__ = "layer_stats"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    layer: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))  # kept_neurons, original_neurons, uniqueness, ...
    value: Mapped[float] = mapped_column(Float)


class NeuronStat(Base):
    __tablename__ = "neuron_stats"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    layer: Mapped[int] = mapped_column(Integer)
    neuron: Mapped[int] = mapped_column(Integer)
    sensitivity: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_abs_cos: Mapped[float | None] = mapped_column(Float, nullable=True)


class CurvePoint(Base):
    __tablename__ = "curves"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))  # loss, sparsity, lr, ...
    value: Mapped[float] = mapped_column(Float)


class Sample(Base):
    __tablename__ = "samples"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(200))
    prompt: Mapped[str] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    prediction: Mapped[str] = mapped_column(Text)
