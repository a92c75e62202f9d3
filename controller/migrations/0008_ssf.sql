-- The Shared Signals receiver (docs/signals.md).

-- Every SET taken, by its issuer and `jti`, written in the same
-- transaction as what it did: a SET delivered again (a retry, a replay)
-- finds its row and changes nothing, and a crash before the commit loses
-- both, so the transmitter's retry acts once. Kept until `keep_until`
-- (its `iat` plus the transmitter's maximum age and clock skew): after
-- that the SET is refused as too old anyway.
CREATE TABLE ssf_jtis (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    transmitter TEXT NOT NULL,
    event TEXT NOT NULL,
    received BIGINT NOT NULL,
    keep_until BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX ssf_jtis_keep_until ON ssf_jtis (keep_until);

-- Each transmitter's stream as the receiver saw it: its last
-- verification event (when, and the `state` it carried) and its last SET.
CREATE TABLE ssf_streams (
    transmitter TEXT PRIMARY KEY,
    last_verification BIGINT,
    verification_state TEXT,
    last_set BIGINT NOT NULL
);
