-- Users' fleet-wide histories: per user the sum of the observations every
-- node posted (user_learned events), as the engine's profile record (hex),
-- streamed to every node so that a user known on one node is known on all.
-- Deleted with the user's erasure, and after keep_profiles_days unused.
CREATE TABLE user_profiles (
    user_key TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    seq BIGINT NOT NULL,
    updated BIGINT NOT NULL
);
CREATE INDEX user_profiles_updated ON user_profiles (updated);

-- The fleet's population model: the count-min counters (numbered feature
-- x 65,536 + row x 16,384 + column) that any observation reached, and
-- each feature's total sightings. Counts of hashed values, no user.
CREATE TABLE population_counters (
    cell BIGINT PRIMARY KEY,
    count BIGINT NOT NULL
);
CREATE TABLE population_totals (
    feature BIGINT PRIMARY KEY,
    total BIGINT NOT NULL
);

-- Users erased, and when: an observation of theirs made before the
-- erasure (queued on a node while it was cut off) must not bring their
-- history back. Kept as long as such an observation is taken
-- (keep_profiles_days), the user's key only.
CREATE TABLE erased_users (
    user_key TEXT PRIMARY KEY,
    at BIGINT NOT NULL
);
