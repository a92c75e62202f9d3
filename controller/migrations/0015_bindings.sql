-- Sessions' rotating bindings as the fleet knows them
-- (docs/bound-sessions.md, "Across the fleet"): per session the join of
-- every node's record — the highest-ranked issuance presented, its earliest
-- presentation, and the compromised mark, which is never cleared. Streamed
-- to every node and kept in snapshots; deleted with the session records
-- (`keep_sessions_days` after the last update).
CREATE TABLE session_bindings (
    session TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    nonce BIGINT NOT NULL,
    previous_nonce BIGINT NOT NULL,
    issued_at BIGINT NOT NULL,
    presented_at BIGINT NOT NULL,
    compromised BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
CREATE INDEX session_bindings_updated ON session_bindings (updated);
