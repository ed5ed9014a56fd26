"""The key domain: what an API key is, and everything that happens to one.

- keys: the secret itself (generation, checksum, digest, scopes), pure functions;
- models: the tables; errors: what the domain refuses, with no HTTP status;
- services: a key's life (issue, rotate, suspend, limit, revoke, prune) in a given session;
- keyring: the check of a presented key, with its cache (cache), its reads (reader), the
  signal between a server's workers (signal), its limits (meter) and its notes of use (usage);
- audit: the audit log; reports: use over the last days.

Nothing here imports Flask: the web layer hands in the session, the settings and the
caller's address, and maps the errors to statuses (livekit_auth.errors).
"""
