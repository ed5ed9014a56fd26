"""a share of a key the admin just issued, kept with the session until its page shows it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 00:05:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('admin_sessions', sa.Column('issued_key_id', sa.Integer(), nullable=True))
    op.add_column('admin_sessions', sa.Column('issued_key_share', sa.String(length=128), nullable=True))


def downgrade():
    with op.batch_alter_table('admin_sessions') as batch:
        batch.drop_column('issued_key_share')
        batch.drop_column('issued_key_id')
