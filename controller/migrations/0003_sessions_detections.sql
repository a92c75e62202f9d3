-- Session baselines the nodes recorded: per session the earliest sighting's
-- engine record (or the latest confirmed one), streamed to every node so
-- that a session is judged against its owner's baseline wherever it lands.
CREATE TABLE session_baselines (
    session TEXT PRIMARY KEY,
    user_key TEXT,
    first_seen BIGINT NOT NULL,
    record TEXT NOT NULL,
    -- The baseline is one the session's user proved themselves on (a
    -- step-up): only another confirmed record replaces it.
    confirmed BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
CREATE INDEX session_baselines_user ON session_baselines (user_key);
CREATE INDEX session_baselines_updated ON session_baselines (updated);

-- Detections the nodes reported, with the decision's facts: the evidence
-- entity risk is counted on, kept for the operators.
CREATE TABLE detections (
    node TEXT NOT NULL,
    reference TEXT NOT NULL,
    session TEXT,
    user_key TEXT,
    route TEXT NOT NULL,
    rule TEXT,
    action TEXT NOT NULL,
    enforced BIGINT NOT NULL,
    score BIGINT NOT NULL,
    reasons TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (node, reference)
);
CREATE INDEX detections_user ON detections (user_key, at);
CREATE INDEX detections_at ON detections (at);

-- Each user's fleet-wide count of recent enforced detections, as last
-- streamed.
-- A count of 0 is a clear: the user passed a step-up at `until`, and only
-- detections after it count.
CREATE TABLE user_detections (
    user_key TEXT PRIMARY KEY,
    count BIGINT NOT NULL,
    until BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
