-- The outbox: every outbound call the controller owes (remediation
-- webhooks, universal logout targets), written before it is attempted so
-- that a restart loses none (docs/webhooks.md, Delivery). Times in
-- milliseconds since the Unix epoch.
CREATE TABLE outbox (
    -- The delivery's id: the receiver's key for deduplication, the same
    -- on every attempt.
    id TEXT PRIMARY KEY,
    -- The configured endpoint: "webhook:<name>" or "logout:<app>".
    endpoint TEXT NOT NULL,
    -- What is sent: "webhook", "global_token_revocation",
    -- "backchannel_logout".
    kind TEXT NOT NULL,
    -- The payload as stored: a webhook's exact body, or a logout's
    -- subject (signed only when sent, so that each attempt is fresh).
    body TEXT NOT NULL,
    -- The universal logout this call serves, if one.
    logout_id TEXT,
    created_ms BIGINT NOT NULL,
    -- "pending", "delivered" (kept a day, for deduplication), "dead".
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    -- Not attempted before.
    next_ms BIGINT NOT NULL,
    -- One delivery at a time per row, whichever replica: a worker owns
    -- the row until lease_ms (past its HTTP timeout).
    lease_ms BIGINT NOT NULL,
    lease_owner TEXT NOT NULL,
    last_error TEXT,
    done_ms BIGINT
);
CREATE INDEX outbox_due ON outbox (endpoint, state, next_ms);
CREATE INDEX outbox_state ON outbox (state, done_ms);

-- Universal logouts (docs/signals.md, Universal logout): one record per
-- call, and the result of each of its targets.
CREATE TABLE logouts (
    id TEXT PRIMARY KEY,
    user_key TEXT NOT NULL,
    by_whom TEXT NOT NULL,
    created BIGINT NOT NULL,
    -- The change that revoked the user on every node.
    seq BIGINT NOT NULL
);
CREATE INDEX logouts_user ON logouts (user_key, created);

CREATE TABLE logout_targets (
    logout_id TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    -- "pending", "delivered", "failed", "not_supported".
    state TEXT NOT NULL,
    detail TEXT,
    attempts BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    PRIMARY KEY (logout_id, target)
);
