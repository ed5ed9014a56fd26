"""the scopes a restricted key may act in; none: full access

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 00:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('api_keys', sa.Column('scopes', sa.String(length=2080), nullable=True))


def downgrade():
    with op.batch_alter_table('api_keys') as batch:
        batch.drop_column('scopes')
