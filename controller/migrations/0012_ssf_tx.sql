-- The Shared Signals transmitter (docs/signals.md, Vigil as a
-- transmitter).

-- Each stream a configured receiver created, owned by that receiver
-- (`client`, its configured name). `config` is the JSON of what the
-- receiver supplied (events_requested, delivery, description); the rest
-- of the stream's configuration is derived from the config in force.
-- `next_seq` numbers the stream's queue; `lease_*` names the one
-- controller delivering its pushes (replicas on PostgreSQL); `next_try`
-- (milliseconds since the epoch) and `failures` are the push back-off.
CREATE TABLE ssf_tx_streams (
    stream_id TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    all_subjects BIGINT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    next_seq BIGINT NOT NULL,
    dropped BIGINT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT NOT NULL,
    next_try BIGINT NOT NULL,
    failures BIGINT NOT NULL
);
CREATE INDEX ssf_tx_streams_client ON ssf_tx_streams (client);

-- Subjects a receiver added (included = 1) or removed (included = 0) on
-- a stream, by a canonical key of the subject (`format:value`).
CREATE TABLE ssf_tx_subjects (
    stream_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    included BIGINT NOT NULL,
    PRIMARY KEY (stream_id, subject)
);

-- Each stream's queue: the claims of each SET not yet acknowledged, in
-- order (signed when delivered, so that a rotated key signs a retry).
-- `sent` is when a poll last handed it out (milliseconds; 0: never).
CREATE TABLE ssf_tx_queue (
    stream_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    jti TEXT NOT NULL,
    claims TEXT NOT NULL,
    sent BIGINT NOT NULL,
    PRIMARY KEY (stream_id, seq)
);
CREATE INDEX ssf_tx_queue_jti ON ssf_tx_queue (stream_id, jti);

-- SETs a receiver refused (a push answered 400, a poll's setErrs): not
-- delivered again, kept for the operator (the newest per stream).
CREATE TABLE ssf_tx_refused (
    stream_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    err TEXT NOT NULL,
    description TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (stream_id, jti)
);

-- Where the transmitter is in the change log: events are derived from
-- committed changes after it, enqueued and the cursor moved in one
-- transaction, so that every committed revocation is enqueued once,
-- whichever replica does it. Starts at the log's head: what was
-- committed before the transmitter existed is not sent.
CREATE TABLE ssf_tx_cursor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO ssf_tx_cursor (id, seq) SELECT 1, head FROM log_head WHERE id = 1;

-- Each user's entity-risk level last sent (risk-level-change is sent
-- when it crosses a level).
CREATE TABLE ssf_tx_user_levels (
    user_key TEXT PRIMARY KEY,
    level TEXT NOT NULL,
    at BIGINT NOT NULL
);

-- An operator's confirmed-compromise feedback on a detection (when),
-- beside its false-positive mark: the user was revoked and RISC
-- credential-compromise sent.
ALTER TABLE detections ADD COLUMN confirmed_compromise BIGINT;

-- When each stream was last sent a user's session-revoked (by the
-- subject's key): another within `echo_window_seconds` is not sent, so
-- that two systems that each revoke on the other's signal (two Vigils,
-- an IdP that reports its own revocations) stop after one round.
CREATE TABLE ssf_tx_recent (
    stream_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (stream_id, subject)
);

-- A revoked session's detection is looked up by session for each
-- revocation the transmitter sends (its rule and reasons).
CREATE INDEX detections_session ON detections (session);
