-- The admin API for security teams (docs/controller.md, Admin API).

-- The node whose record is the session's baseline: which node saw it.
ALTER TABLE session_baselines ADD COLUMN node TEXT;

-- When an operator marked the detection a false positive (NULL: not
-- marked): it no longer counts toward its user's entity risk.
ALTER TABLE detections ADD COLUMN false_positive BIGINT;
CREATE INDEX detections_reference ON detections (reference);

-- Devices and networks operators trusted for users, fleet-wide; in every
-- snapshot, so a node that resyncs still trusts them. `what` is one of
-- device, asn, prefix, country; `value` its text form in the change.
CREATE TABLE user_trust (
    user_key TEXT NOT NULL,
    what TEXT NOT NULL,
    value TEXT NOT NULL,
    at BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (user_key, what, value)
);

-- Users' names as given in admin calls, kept only with
-- `user_names = "clear"` (docs/privacy.md); deleted at start otherwise,
-- and with the user's erasure.
CREATE TABLE user_names (
    user_key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    at BIGINT NOT NULL
);
