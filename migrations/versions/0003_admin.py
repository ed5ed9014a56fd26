"""admin accounts, sessions, audit log, key use days and search indexes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 15:31:21.456448

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('admins',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_admins')),
    sa.UniqueConstraint('email', name=op.f('uq_admins_email'))
    )
    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=254), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('target', sa.String(length=254), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('detail', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_action_at', ['action', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_address'), ['address'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_target'), ['target'], unique=False)

    op.create_table('admin_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_digest', sa.String(length=64), nullable=False),
    sa.Column('admin_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['admin_id'], ['admins.id'], name=op.f('fk_admin_sessions_admin_id_admins'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_admin_sessions')),
    sa.UniqueConstraint('token_digest', name=op.f('uq_admin_sessions_token_digest'))
    )
    with op.batch_alter_table('admin_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_admin_sessions_admin_id'), ['admin_id'], unique=False)

    op.create_table('key_use_days',
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('key_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['key_id'], ['api_keys.id'], name=op.f('fk_key_use_days_key_id_api_keys'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('day', 'key_id', name=op.f('pk_key_use_days'))
    )
    with op.batch_alter_table('key_use_days', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_key_use_days_key_id'), ['key_id'], unique=False)

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_api_keys_last_used_at'), ['last_used_at'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('name_lower', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('org_name_lower', sa.String(length=100), nullable=True))

    # Existing users get their lower-cased copies before the column becomes required.
    op.execute("UPDATE users SET name_lower = lower(name), org_name_lower = lower(org_name)")
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('name_lower', existing_type=sa.String(length=100), nullable=False)
        batch_op.create_index(batch_op.f('ix_users_name_lower'), ['name_lower'], unique=False)
        batch_op.create_index(batch_op.f('ix_users_org_name_lower'), ['org_name_lower'], unique=False)



def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_users_org_name_lower'))
        batch_op.drop_index(batch_op.f('ix_users_name_lower'))
        batch_op.drop_column('org_name_lower')
        batch_op.drop_column('name_lower')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_last_used_at'))
        batch_op.drop_index(batch_op.f('ix_api_keys_created_at'))

    with op.batch_alter_table('key_use_days', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_key_use_days_key_id'))

    op.drop_table('key_use_days')
    with op.batch_alter_table('admin_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_admin_sessions_admin_id'))

    op.drop_table('admin_sessions')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_target'))
        batch_op.drop_index(batch_op.f('ix_audit_events_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_address'))
        batch_op.drop_index('ix_audit_events_action_at')

    op.drop_table('audit_events')
    op.drop_table('admins')
