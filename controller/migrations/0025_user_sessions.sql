-- A user's pages at any depth (docs/dashboard.md, Pages): each page of a
-- user's sessions, and each source of a page of their timeline, is one
-- range of an index, however much the user has.
--
-- A user's sessions newest first seen, ties by key: the paged list (a
-- session's first sight does not change as nodes re-send its record, so
-- a session does not move in the order between pages). It starts with
-- (user_key, first_seen), so it serves everything the index it replaces
-- did (the timeline's sessions first seen).
CREATE INDEX session_baselines_user_first ON session_baselines (user_key, first_seen, session);
DROP INDEX session_baselines_user_seen;
-- The sessions a user's detections name (the timeline's revoked sessions,
-- and a user's sessions whose records are gone).
CREATE INDEX detections_user_session ON detections (user_key, session);
-- Each label of a user's detections by its time (the timeline): partial,
-- as only labelled detections are in them.
CREATE INDEX detections_user_false_positive ON detections (user_key, false_positive)
    WHERE false_positive IS NOT NULL;
CREATE INDEX detections_user_confirmed ON detections (user_key, confirmed_compromise)
    WHERE confirmed_compromise IS NOT NULL;
CREATE INDEX detections_user_stepped_up ON detections (user_key, stepped_up)
    WHERE stepped_up IS NOT NULL;
