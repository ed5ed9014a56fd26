"""room for lower-cased copies: lower-casing can make text longer (İ becomes i and a dot)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 10:15:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Each lower-cased copy has room for twice its source: str.lower() turns one character into at
# most two (U+0130). An email's copy is bounded by its 64-character local part instead.
WIDENED = {
    'users': [('name_lower', 100, 200), ('org_name_lower', 100, 200), ('email_canonical', 254, 320)],
    'admins': [('email', 254, 320)],
}


def resize(widen):
    """Give each column its wide length, or its narrow one back."""
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, narrow, wide in columns:
                before, after = (narrow, wide) if widen else (wide, narrow)
                batch_op.alter_column(column, existing_type=sa.String(length=before),
                                      type_=sa.String(length=after))


def upgrade():
    resize(widen=True)


def downgrade():
    resize(widen=False)
