"""the version each shard of keys last changed at, for the proxies that keep verify answers

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 21:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

SHARDS = 256


def upgrade():
    shards = op.create_table('key_shards',
    sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('shard', name=op.f('pk_key_shards'))
    )
    # Every shard starts at the keys' version now: a proxy's answers from before the upgrade
    # name no shard version, so none of them is kept past it.
    version = op.get_bind().execute(sa.text('SELECT version FROM key_changes WHERE id = 1')).scalar() or 0
    op.bulk_insert(shards, [{'shard': shard, 'version': version} for shard in range(SHARDS)])


def downgrade():
    op.drop_table('key_shards')
