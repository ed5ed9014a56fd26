"""key changes version for worker caches

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 15:42:07.898290

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('key_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_changes'))
    )
    op.execute("INSERT INTO key_changes (id, version) VALUES (1, 0)")


def downgrade():
    op.drop_table('key_changes')
