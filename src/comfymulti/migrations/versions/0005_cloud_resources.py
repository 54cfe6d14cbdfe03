"""Cloud resources we created (instances, volumes) with their price and lifetime.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "cloud_resources",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.String(64), nullable=False),
        sa.Column("size_gb", sa.Integer, nullable=False),
        sa.Column("price_per_hour", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float, nullable=True),
    )
    op.create_index("ix_cloud_resources_name", "cloud_resources", ["name"])
