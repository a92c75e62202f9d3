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
