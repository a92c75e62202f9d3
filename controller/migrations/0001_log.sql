-- The change log: every change to the fleet's state, numbered contiguously
-- from 1 by the one row of log_head, which each writing transaction updates
-- (and so locks) before it inserts: numbers are handed out in commit order
-- and a rolled-back transaction gives its numbers back.
CREATE TABLE log_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    head BIGINT NOT NULL,
    oldest BIGINT NOT NULL
);
INSERT INTO log_head (id, head, oldest) VALUES (1, 0, 1);

CREATE TABLE changes (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    body TEXT NOT NULL
);

-- The state the log builds, for snapshots.
CREATE TABLE revoked_sessions (
    session TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE TABLE revoked_users (
    user_key TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE TABLE user_risk (
    user_key TEXT PRIMARY KEY,
    points BIGINT NOT NULL,
    until BIGINT NOT NULL,
    at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);

-- Node events already taken, by (node, id): a batch posted twice changes
-- nothing the second time.
CREATE TABLE node_events (
    node TEXT NOT NULL,
    id TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (node, id)
);
