"""rate limits and quotas of keys and of users, the keys that count together; refusals per key, day and outcome

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 04:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

LIMITED = ('api_keys', 'users')


def upgrade():
    for table in LIMITED:
        op.add_column(table, sa.Column('rate_limit', sa.String(length=200), nullable=True))
        op.add_column(table, sa.Column('quota_limit', sa.BigInteger(), nullable=True))
        op.add_column(table, sa.Column('quota_period', sa.String(length=5), nullable=True))
    op.add_column('api_keys', sa.Column('limit_group', sa.Integer(), nullable=True))
    op.create_index('ix_api_keys_limit_group', 'api_keys', ['limit_group'])
    op.create_table(
        'key_refusal_counts',
        sa.Column('key_id', sa.Integer(), sa.ForeignKey('api_keys.id', ondelete='CASCADE'), nullable=False),
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('outcome', sa.String(length=16), nullable=False),
        sa.Column('refusals', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('key_id', 'day', 'outcome'),
    )


def downgrade():
    op.drop_table('key_refusal_counts')
    op.drop_index('ix_api_keys_limit_group', table_name='api_keys')
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('limit_group')
    for table in LIMITED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('quota_period')
            batch.drop_column('quota_limit')
            batch.drop_column('rate_limit')
