"""The admin pages: sign in, see every key, find one, revoke it, read the audit log."""
