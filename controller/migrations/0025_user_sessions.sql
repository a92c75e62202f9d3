-- A user's sessions most recently updated first, ties by key (the user
-- page and its paged list of sessions, docs/dashboard.md, Pages): each
-- page is one range of this index, however many sessions the user has.
-- It starts with `user_key`, so it serves the lookups by user that
-- `session_baselines_user_seen` does not order.
CREATE INDEX session_baselines_user_updated ON session_baselines (user_key, updated, session);
