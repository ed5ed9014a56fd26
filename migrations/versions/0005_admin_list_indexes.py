"""composite indexes for the admin list orders

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 16:24:13.949444

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_created_at'))
        batch_op.drop_index(batch_op.f('ix_api_keys_last_used_at'))
        batch_op.create_index('ix_api_keys_created_at_id', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_api_keys_last_used_at_id', ['last_used_at', 'id'], unique=False)



def downgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index('ix_api_keys_last_used_at_id')
        batch_op.drop_index('ix_api_keys_created_at_id')
        batch_op.create_index(batch_op.f('ix_api_keys_last_used_at'), ['last_used_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_api_keys_created_at'), ['created_at'], unique=False)

