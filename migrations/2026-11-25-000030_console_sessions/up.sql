-- Sessions of the operator console (`hookline-worker api`, `/`). A browser signs in with an API
-- key once; afterwards it holds only a random session token in an HttpOnly cookie. Only the
-- token's SHA-256 is stored (256 random bits: nothing to brute-force, so no slow hash), and every
-- request re-checks the key behind the session, so revoking or expiring a key ends its sessions.
CREATE TABLE console_sessions (
    token_hash  bytea PRIMARY KEY,
    key_id      text NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
-- Expired sessions are deleted in bounded batches at each sign-in.
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
