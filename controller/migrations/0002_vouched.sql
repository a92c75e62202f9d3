-- Whether a session's revocation is vouched for (an operator's, or a
-- node's for a session bound to a user): nodes keep those in the budget
-- nothing evicts but age.
ALTER TABLE revoked_sessions ADD COLUMN vouched BIGINT NOT NULL DEFAULT 0;
