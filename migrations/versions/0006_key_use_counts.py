"""a count of keys used per day, instead of a row per key and day

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 18:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('key_use_counts',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('keys_used', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('day', name=op.f('pk_key_use_counts'))
    )
    op.execute(
        'INSERT INTO key_use_counts (day, keys_used) '
        'SELECT day, count(*) FROM key_use_days GROUP BY day'
    )
    with op.batch_alter_table('key_use_days', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_key_use_days_key_id'))

    op.drop_table('key_use_days')


def downgrade():
    # The counts cannot be split back into keys: the days start empty again.
    op.create_table('key_use_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], name=op.f('fk_key_use_days_key_id_api_keys'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('day', 'key_id', name=op.f('pk_key_use_days'))
    )
    with op.batch_alter_table('key_use_days', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_key_use_days_key_id'), ['key_id'], unique=False)

    op.drop_table('key_use_counts')
