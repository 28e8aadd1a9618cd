-- Bedside schema for SQLite. Times are Unix milliseconds (INTEGER) so the same
-- comparisons work on PostgreSQL (BIGINT). PHI columns hold AES-256-GCM ciphertext.

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    wrapped_data_key BLOB NOT NULL,
    key_provider     TEXT NOT NULL,
    created_at       INTEGER NOT NULL
);

CREATE TABLE staff (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    role         TEXT NOT NULL CHECK (role IN ('admin', 'scheduler', 'clinician')),
    display_name TEXT NOT NULL,
    email_ct     BLOB,
    created_at   INTEGER NOT NULL
);
CREATE INDEX staff_tenant ON staff(tenant_id);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    staff_id   TEXT REFERENCES staff(id),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'scheduler', 'clinician')),
    key_hash   BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE visits (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    clinician_id       TEXT NOT NULL REFERENCES staff(id),
    status             TEXT NOT NULL CHECK (status IN ('scheduled', 'waiting', 'in_progress', 'ended', 'cancelled')),
    scheduled_at       INTEGER NOT NULL,
    duration_minutes   INTEGER NOT NULL,
    media_backend      TEXT NOT NULL,
    waiting_room       INTEGER NOT NULL,
    patient_name_ct    BLOB NOT NULL,
    patient_phone_ct   BLOB,
    patient_email_ct   BLOB,
    chief_complaint_ct BLOB,
    notes_ct           BLOB,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    started_at         INTEGER,
    ended_at           INTEGER
);
CREATE INDEX visits_tenant_sched ON visits(tenant_id, scheduled_at, id);
CREATE INDEX visits_tenant_created ON visits(tenant_id, created_at);

CREATE TABLE participants (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    role       TEXT NOT NULL CHECK (role IN ('patient', 'clinician')),
    staff_id   TEXT REFERENCES staff(id),
    created_at INTEGER NOT NULL
);
CREATE INDEX participants_visit ON participants(visit_id);

CREATE TABLE links (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    visit_id       TEXT NOT NULL REFERENCES visits(id),
    role           TEXT NOT NULL CHECK (role IN ('patient', 'clinician')),
    code_hash      BLOB NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    redeemed_at    INTEGER,
    participant_id TEXT REFERENCES participants(id),
    device_hash    BLOB,
    ua_hash        BLOB,
    ip_prefix      TEXT
);
CREATE INDEX links_visit ON links(visit_id, role);

CREATE TABLE notifications (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    visit_id         TEXT NOT NULL REFERENCES visits(id),
    channel          TEXT NOT NULL CHECK (channel IN ('sms', 'email')),
    transport        TEXT NOT NULL,
    recipient_ct     BLOB NOT NULL,
    recipient_masked TEXT NOT NULL,
    body_ct          BLOB NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    sent_at          INTEGER
);
CREATE INDEX notifications_visit ON notifications(tenant_id, visit_id);
CREATE INDEX notifications_due ON notifications(status, next_attempt_at);

-- Append-only, hash-chained per tenant: hash = SHA-256(prev_hash || canonical row).
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    tenant_id  TEXT NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    event      TEXT NOT NULL,
    visit_id   TEXT,
    outcome    TEXT NOT NULL,
    reason     TEXT,
    ip_masked  TEXT,
    ua_hash    TEXT,
    details    TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_tenant_seq ON audit(tenant_id, seq);
CREATE INDEX audit_tenant_visit ON audit(tenant_id, visit_id, seq);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit rows are append-only');
END;
