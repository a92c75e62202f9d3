-- DBSC bindings (docs/bound-sessions.md, DBSC at the edge; docs/controller.md,
-- the `dbsc_bound` change): the registration a node verified, made once per
-- DBSC session and never changed after. The first registration taken for
-- a session key is kept; a different one for the same session is refused
-- (a thief's registration on another node, or a forged record). `root` is
-- set for a session that inherited another's binding (the app rotated its
-- cookie). `public_key` is Vigil's own encoding of the key, in hex; no
-- credential is stored. Kept as long as session baselines (by `at`),
-- deleted with the user's erasure (by the sessions of the user).
CREATE TABLE dbsc_bindings (
    session TEXT PRIMARY KEY,
    dbsc_id TEXT NOT NULL,
    root TEXT,
    public_key TEXT NOT NULL,
    node TEXT NOT NULL,
    at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX dbsc_bindings_at ON dbsc_bindings (at);
