-- Rule bundles an operator published: every version kept (a rollback
-- publishes an earlier one again), each validated before it was taken.
-- `seq` is the change that last published it: the bundle in force is the
-- one with the highest.
CREATE TABLE rule_bundles (
    version BIGINT PRIMARY KEY,
    text TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX rule_bundles_seq ON rule_bundles (seq);

-- What each node reported of the bundles it was sent: the version in force
-- (the last it applied) and its last rejection since then.
CREATE TABLE node_rules (
    node TEXT PRIMARY KEY,
    version BIGINT,
    sha256 TEXT,
    applied_at BIGINT,
    failed_version BIGINT,
    failed_sha256 TEXT,
    failure TEXT,
    failed_at BIGINT
);
