-- What each detection's decision saw of its request, as the node reported
-- it (docs/dashboard.md, Detection page; vigil_fleet::RequestFacts): the
-- client address as judged and the chain it was found in, the peer, the
-- trusted provider, the JA4, the device and browser, the country and ASN.
-- NULL for detections reported without them (a node of an earlier build).
-- In the detection's own row, so that its retention (keep_detections_days)
-- and a user's erasure take them with it.
--
-- client_key is the client address as 32 lower-case hex digits of its IPv6
-- form (IPv4 as ::ffff:a.b.c.d): one fixed-width key for both families, so
-- that a CIDR prefix is a range of keys (search by address).
ALTER TABLE detections ADD COLUMN client_ip TEXT;
ALTER TABLE detections ADD COLUMN client_key TEXT;
ALTER TABLE detections ADD COLUMN peer TEXT;
-- The chain as read, leftmost first, entries separated by a space, `?` for
-- one that names no address; at most 16 entries.
ALTER TABLE detections ADD COLUMN chain TEXT;
ALTER TABLE detections ADD COLUMN chain_truncated BIGINT;
ALTER TABLE detections ADD COLUMN provider TEXT;
ALTER TABLE detections ADD COLUMN ja4 TEXT;
ALTER TABLE detections ADD COLUMN device TEXT;
ALTER TABLE detections ADD COLUMN browser TEXT;
ALTER TABLE detections ADD COLUMN browser_major BIGINT;
ALTER TABLE detections ADD COLUMN platform TEXT;
ALTER TABLE detections ADD COLUMN country TEXT;
ALTER TABLE detections ADD COLUMN asn BIGINT;
CREATE INDEX detections_client ON detections (client_key, at);
CREATE INDEX detections_asn ON detections (asn, at);
CREATE INDEX detections_ja4 ON detections (ja4, at);
