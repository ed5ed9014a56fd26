"""a feed of the keys each change touched, so workers evict those keys and keep the rest

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 11:45:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('key_change_feed',
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('version', 'digest', name=op.f('pk_key_change_feed'))
    )


def downgrade():
    op.drop_table('key_change_feed')
