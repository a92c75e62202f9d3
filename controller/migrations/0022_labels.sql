-- The feedback pipeline (docs/dashboard.md, Feedback pipeline).
--
-- End-user feedback: when the user passed a step-up on the session after
-- a detection asked for one (a confirmed session baseline from a node),
-- the detection is labelled as such: the user proved it was them. Kept
-- apart from the operators' labels (false_positive, confirmed_compromise).
ALTER TABLE detections ADD COLUMN stepped_up BIGINT;

-- The precision page, its metrics and `vigil-controller export-labels`
-- read the labelled detections only: a partial index keeps them from
-- reading every detection held.
CREATE INDEX detections_labelled ON detections (at, node, reference)
    WHERE false_positive IS NOT NULL OR confirmed_compromise IS NOT NULL OR stepped_up IS NOT NULL;
