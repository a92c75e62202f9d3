-- What each node taught of users per UTC day (day = seconds / 86400), so
-- that one node, or one stolen node token, can grow a user's history and
-- the fleet's population only so far a day (docs/controller.md, Intake
-- rules). Shared by every replica; rows before yesterday are deleted by
-- the periodic expiry, and a user's with their erasure.
CREATE TABLE node_user_budget (
    node TEXT NOT NULL,
    day BIGINT NOT NULL,
    user_key TEXT NOT NULL,
    -- Observations of the user taken from the node that day, and of them
    -- those that opened a session.
    observations BIGINT NOT NULL,
    new_sessions BIGINT NOT NULL,
    PRIMARY KEY (node, day, user_key)
);
CREATE INDEX node_user_budget_user ON node_user_budget (user_key);

-- Users without a fleet history a node started one for, per UTC day.
CREATE TABLE node_day_budget (
    node TEXT NOT NULL,
    day BIGINT NOT NULL,
    new_users BIGINT NOT NULL,
    PRIMARY KEY (node, day)
);
