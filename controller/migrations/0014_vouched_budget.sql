-- Revocations a node had vouched for on a baseline it recorded itself,
-- per UTC day (docs/controller.md, Intake rules): beyond
-- `node_vouched_revocations_per_day`, such revocations are taken
-- unvouched, so that a stolen node token cannot fill every node's main
-- revocation store with sessions it made up.
ALTER TABLE node_day_budget ADD COLUMN vouched BIGINT NOT NULL DEFAULT 0;
