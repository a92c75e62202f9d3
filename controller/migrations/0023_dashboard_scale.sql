-- The dashboard at scale (docs/dashboard.md, Scale): its lists are paged
-- by keyset — newest first, after the last row shown (`?before=`) — and
-- each page is a range of one index rather than rows counted past.
--
-- Detections newest first, ties by node and reference (the key): the
-- detections list, the overview's newest, and, with `action` and `reasons`
-- carried in the index, the overview's per-hour counts and its reasons
-- (the newest 10,000 of the last 24 hours) read from the index alone.
-- It starts with `at`, so it serves everything `detections_at` did.
CREATE INDEX detections_newest ON detections (at, node, reference, action, reasons);
DROP INDEX detections_at;
-- A user's detections newest first (the user page, its timeline and risk
-- history, the list filtered by user); it starts with (user_key, at), so
-- it serves everything `detections_user` did.
CREATE INDEX detections_user_newest ON detections (user_key, at, node, reference);
DROP INDEX detections_user;
-- The audit trail newest first, ties by id.
CREATE INDEX audit_newest ON audit (at, id);
DROP INDEX audit_at;
-- A user's sessions by when they were first seen (the user's timeline).
CREATE INDEX session_baselines_user_seen ON session_baselines (user_key, first_seen);
DROP INDEX session_baselines_user;
