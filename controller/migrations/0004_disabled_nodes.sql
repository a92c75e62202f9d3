-- Nodes an operator disabled through the admin API: their tokens are
-- refused and their streams ended at once, on every replica, without a
-- restart or a config change.
CREATE TABLE disabled_nodes (
    name TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
