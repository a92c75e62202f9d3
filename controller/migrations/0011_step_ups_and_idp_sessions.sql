-- Users asked to step up (docs/controller.md, the `user_step_up` change):
-- every session of the user first seen at or before `at` must pass a
-- step-up at its next request. Only the latest ask per user matters; it
-- is kept for snapshots (a node that resyncs, or starts afresh, still
-- asks), like revoked_users, and deleted with the user's erasure.
CREATE TABLE user_step_ups (
    user_key TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);

-- Identity provider sessions learnt at step-ups (docs/signals.md, IdP
-- sessions): the keyed hash of the provider's issuer and `sid` (never the
-- raw `sid`), and each Vigil session of the user that signed in under it,
-- so that the provider's logout of that session ends those sessions
-- alone. At most 16 sessions per provider session (a full one is treated
-- as unknown: every session of the user ends); kept as long as session
-- baselines, deleted with the user's erasure.
CREATE TABLE idp_sessions (
    idp_session TEXT NOT NULL,
    session TEXT NOT NULL,
    user_key TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (idp_session, session)
);
CREATE INDEX idp_sessions_at ON idp_sessions (at);
CREATE INDEX idp_sessions_user ON idp_sessions (user_key);

-- Every OpenID Connect back-channel logout token taken, by its issuer and
-- `jti`, written in the same transaction as the revocations it made: a
-- token presented again (a replay) finds its row and is refused. Kept
-- until `keep_until` (its `iat` plus the provider's maximum age and clock
-- skew): after that it is refused as too old anyway.
CREATE TABLE bcl_jtis (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    provider TEXT NOT NULL,
    received BIGINT NOT NULL,
    keep_until BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX bcl_jtis_keep_until ON bcl_jtis (keep_until);
