-- A review queue written by safepredict main before issue 25 (schema version 1):
-- SQLiteReviewQueue.write_batch/claim_case/resolve/record_outcome, dumped with iterdump().
PRAGMA user_version = 1;
BEGIN TRANSACTION;
CREATE TABLE cases (
    decision_id    TEXT PRIMARY KEY NOT NULL,
    created_at     TEXT NOT NULL,
    model_name     TEXT,
    model_version  TEXT,
    tier           TEXT NOT NULL,
    action         TEXT NOT NULL,
    reasons        TEXT NOT NULL DEFAULT '[]',
    prediction     TEXT,
    prediction_set TEXT,
    interval       TEXT,
    confidence     REAL,
    explanation    TEXT,
    inputs         TEXT,
    inputs_hash    TEXT,
    audit          INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'claimed', 'resolved')),
    reviewer       TEXT,
    claimed_at     TEXT,
    resolved_at    TEXT,
    outcome        TEXT,
    outcome_source TEXT,
    note           TEXT
);
INSERT INTO "cases" VALUES('d-0','2026-01-01T00:00:00.000000+00:00',NULL,NULL,'auto','accept','[]','0','[0]',NULL,0.5,NULL,NULL,NULL,1,'resolved',NULL,NULL,'2026-12-07T00:13:56.266690+00:00','0','external',NULL);
INSERT INTO "cases" VALUES('d-1','2026-01-01T00:00:01.000000+00:00',NULL,NULL,'human','abstain','["empty_set"]','1','[1]',NULL,0.5,NULL,NULL,NULL,0,'resolved','ana','2026-12-07T00:13:56.254654+00:00','2026-12-07T00:13:56.258783+00:00','2','review','old');
INSERT INTO "cases" VALUES('d-2','2026-01-01T00:00:02.000000+00:00',NULL,NULL,'auto','accept','[]','2','[2]',NULL,0.5,NULL,NULL,NULL,1,'pending',NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "cases" VALUES('d-3','2026-01-01T00:00:03.000000+00:00',NULL,NULL,'human','abstain','["empty_set"]','0','[0]',NULL,0.5,NULL,NULL,NULL,0,'claimed','bo','2026-12-07T00:13:56.262692+00:00',NULL,NULL,NULL,NULL);
INSERT INTO "cases" VALUES('d-4','2026-01-01T00:00:04.000000+00:00',NULL,NULL,'auto','accept','[]','1','[1]',NULL,0.5,NULL,NULL,NULL,1,'pending',NULL,NULL,NULL,NULL,NULL,NULL);
INSERT INTO "cases" VALUES('d-5','2026-01-01T00:00:05.000000+00:00',NULL,NULL,'human','abstain','["empty_set"]','2','[2]',NULL,0.5,NULL,NULL,NULL,0,'pending',NULL,NULL,NULL,NULL,NULL,NULL);
CREATE TABLE external_outcomes (
    decision_id TEXT PRIMARY KEY NOT NULL,
    outcome     TEXT,
    source      TEXT,
    recorded_at TEXT NOT NULL
);
INSERT INTO "external_outcomes" VALUES('never','1','external','2026-12-07T00:13:56.270641+00:00');
CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
INSERT INTO "meta" VALUES('outcome_space','{"labels": [0, 1, 2], "task": "classification"}');
INSERT INTO "meta" VALUES('tiers','[{"name": "auto", "action": "accept", "max_set_size": 1}, {"name": "human", "action": "abstain"}]');
CREATE TABLE tally (
    kind TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (kind, a, b)
) WITHOUT ROWID;
INSERT INTO "tally" VALUES('audit','errors','',0);
INSERT INTO "tally" VALUES('audit','n','',1);
INSERT INTO "tally" VALUES('resolved_on','2026-12-07','',2);
INSERT INTO "tally" VALUES('status','auto','pending',2);
INSERT INTO "tally" VALUES('status','auto','resolved',1);
INSERT INTO "tally" VALUES('status','human','claimed',1);
INSERT INTO "tally" VALUES('status','human','pending',1);
INSERT INTO "tally" VALUES('status','human','resolved',1);
CREATE INDEX cases_status_created ON cases (status, created_at);
CREATE INDEX cases_status_tier_created ON cases (status, tier, created_at);
CREATE TRIGGER cases_tally_insert AFTER INSERT ON cases BEGIN
    INSERT INTO tally (kind, a, b, n) SELECT 'status', NEW.tier, NEW.status, +1 WHERE 1 ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'resolved_on', coalesce(substr(NEW.resolved_at, 1, 10), ''), '', +1 WHERE NEW.status = 'resolved' ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'n', '', +1 WHERE NEW.status = 'resolved' AND NEW.audit = 1 AND NEW.action = 'accept' ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'errors', '', +1 WHERE NEW.status = 'resolved' AND NEW.audit = 1 AND NEW.action = 'accept' AND NEW.prediction IS NOT NEW.outcome ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER cases_tally_update AFTER UPDATE ON cases BEGIN
    INSERT INTO tally (kind, a, b, n) SELECT 'status', OLD.tier, OLD.status, -1 WHERE 1 ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'resolved_on', coalesce(substr(OLD.resolved_at, 1, 10), ''), '', -1 WHERE OLD.status = 'resolved' ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'n', '', -1 WHERE OLD.status = 'resolved' AND OLD.audit = 1 AND OLD.action = 'accept' ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'errors', '', -1 WHERE OLD.status = 'resolved' AND OLD.audit = 1 AND OLD.action = 'accept' AND OLD.prediction IS NOT OLD.outcome ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'status', NEW.tier, NEW.status, +1 WHERE 1 ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'resolved_on', coalesce(substr(NEW.resolved_at, 1, 10), ''), '', +1 WHERE NEW.status = 'resolved' ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'n', '', +1 WHERE NEW.status = 'resolved' AND NEW.audit = 1 AND NEW.action = 'accept' ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'errors', '', +1 WHERE NEW.status = 'resolved' AND NEW.audit = 1 AND NEW.action = 'accept' AND NEW.prediction IS NOT NEW.outcome ON CONFLICT (kind, a, b) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER cases_tally_delete AFTER DELETE ON cases BEGIN
    INSERT INTO tally (kind, a, b, n) SELECT 'status', OLD.tier, OLD.status, -1 WHERE 1 ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'resolved_on', coalesce(substr(OLD.resolved_at, 1, 10), ''), '', -1 WHERE OLD.status = 'resolved' ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'n', '', -1 WHERE OLD.status = 'resolved' AND OLD.audit = 1 AND OLD.action = 'accept' ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
    INSERT INTO tally (kind, a, b, n) SELECT 'audit', 'errors', '', -1 WHERE OLD.status = 'resolved' AND OLD.audit = 1 AND OLD.action = 'accept' AND OLD.prediction IS NOT OLD.outcome ON CONFLICT (kind, a, b) DO UPDATE SET n = n - 1;
END;
COMMIT;
