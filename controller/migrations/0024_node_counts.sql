-- Each node's counts per minute (docs/dashboard.md, Requests judged and
-- rules; vigil_fleet::NodeCounts): requests judged by action, decisions by
-- reason code, each rule's matches (a shadow rule's with the action it
-- would have taken). One row per node, run of the node, minute, kind and
-- name: a count posted again replaces the row (a retried batch never
-- counts twice); a node's restart is a new run, kept beside the old.
-- Kept keep_detections_days, like the detections.
CREATE TABLE node_counts (
    node TEXT NOT NULL,
    run TEXT NOT NULL,
    minute BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    action TEXT NOT NULL,
    n BIGINT NOT NULL,
    PRIMARY KEY (node, run, minute, kind, name)
);
-- The overview and the rules page read the last 24 hours by kind.
CREATE INDEX node_counts_minute ON node_counts (minute, kind);
