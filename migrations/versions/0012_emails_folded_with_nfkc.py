"""users' and admins' emails as compared are folded with NFKC, so ｄｕｐｅ@example.com is dupe@example.com

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 22:45:00

"""
import unicodedata

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def folded(email):
    """canonical_email as this revision defines it (the model's may move on)."""
    return unicodedata.normalize('NFKC', email.strip()).lower()


def refold(table, key, column):
    """Refold a column's emails; one that would become another row's is left as it is, and said."""
    bind = op.get_bind()
    rows = bind.execute(sa.text(f'SELECT {key}, {column} FROM {table}')).all()
    taken = {value for _, value in rows}
    for row_id, value in rows:
        new = folded(value)
        if new == value:
            continue
        if new in taken:
            print(f'livekit-auth: {table} {row_id} keeps its email as compared; its folded form is another\'s')
            continue
        bind.execute(sa.text(f'UPDATE {table} SET {column} = :new WHERE {key} = :id'), {'new': new, 'id': row_id})
        taken.discard(value)
        taken.add(new)


def upgrade():
    refold('users', 'id', 'email_canonical')
    refold('admins', 'id', 'email')


def downgrade():
    pass  # the folded forms compare as before for every address without compatibility characters
