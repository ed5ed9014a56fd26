"""keys an operator suspended, and who: refused until resumed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 00:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('api_keys', sa.Column('suspended_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('api_keys', sa.Column('suspended_by', sa.String(length=254), nullable=True))


def downgrade():
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('suspended_by')
        batch.drop_column('suspended_at')
