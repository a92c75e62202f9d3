-- What operators did through the dashboard (docs/dashboard.md, Audit): who
-- (the session's identity and role), what (the action and its target),
-- when, from where (the client address), and how it ended.
CREATE TABLE audit (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    who TEXT NOT NULL,
    role TEXT NOT NULL,
    client TEXT,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX audit_at ON audit (at);
