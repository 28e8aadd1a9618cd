-- Bedside schema for PostgreSQL: the same tables, columns, constraints and indexes as
-- migrations/sqlite/0001_init.sql, with types that decode into the Rust row types exactly
-- (sqlx-postgres is strict): INTEGER → BIGINT (i64; times are Unix milliseconds),
-- BLOB → BYTEA (Vec<u8>), TEXT → TEXT (String), visits.waiting_room → BOOLEAN (bool),
-- audit.seq → BIGINT identity (i64). PHI columns hold AES-256-GCM ciphertext.
--
-- Roles. This migration runs as the OWNER role (it owns every table and function and is not
-- subject to row-level security). The application connects as a different login role that is
-- a member of the group role `bedside_app`, which owns nothing, gets only the privileges
-- granted below, and sees only the rows of the tenant it sets per transaction:
--     SELECT set_config('bedside.tenant_id', $1, true)      -- = SET LOCAL, ends with the tx
-- With no tenant set, every tenant table looks empty and every insert is refused. The few
-- lookups that must cross tenants are SECURITY DEFINER functions at the end of this file.

-- The group role is cluster-wide; create it unless it exists (several databases may be
-- migrated at once, hence the race-tolerant handler).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'bedside_app') THEN
        CREATE ROLE bedside_app NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    wrapped_data_key BYTEA NOT NULL,
    key_provider     TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);

CREATE TABLE staff (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    role         TEXT NOT NULL CHECK (role IN ('admin', 'scheduler', 'clinician')),
    display_name TEXT NOT NULL,
    email_ct     BYTEA,
    created_at   BIGINT NOT NULL
);
CREATE INDEX staff_tenant ON staff(tenant_id);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    staff_id   TEXT REFERENCES staff(id),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'scheduler', 'clinician')),
    key_hash   BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE visits (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL REFERENCES tenants(id),
    clinician_id       TEXT NOT NULL REFERENCES staff(id),
    status             TEXT NOT NULL CHECK (status IN ('scheduled', 'waiting', 'in_progress', 'ended', 'cancelled')),
    scheduled_at       BIGINT NOT NULL,
    duration_minutes   BIGINT NOT NULL,
    media_backend      TEXT NOT NULL,
    waiting_room       BOOLEAN NOT NULL,
    patient_name_ct    BYTEA NOT NULL,
    patient_phone_ct   BYTEA,
    patient_email_ct   BYTEA,
    chief_complaint_ct BYTEA,
    notes_ct           BYTEA,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    started_at         BIGINT,
    ended_at           BIGINT
);
CREATE INDEX visits_tenant_sched ON visits(tenant_id, scheduled_at, id);
CREATE INDEX visits_tenant_created ON visits(tenant_id, created_at);

CREATE TABLE participants (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    visit_id   TEXT NOT NULL REFERENCES visits(id),
    role       TEXT NOT NULL CHECK (role IN ('patient', 'clinician')),
    staff_id   TEXT REFERENCES staff(id),
    created_at BIGINT NOT NULL
);
CREATE INDEX participants_visit ON participants(visit_id);

CREATE TABLE links (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    visit_id       TEXT NOT NULL REFERENCES visits(id),
    role           TEXT NOT NULL CHECK (role IN ('patient', 'clinician')),
    code_hash      BYTEA NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    revoked_at     BIGINT,
    redeemed_at    BIGINT,
    participant_id TEXT REFERENCES participants(id),
    device_hash    BYTEA,
    ua_hash        BYTEA,
    ip_prefix      TEXT
);
CREATE INDEX links_visit ON links(visit_id, role);

CREATE TABLE notifications (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    visit_id         TEXT NOT NULL REFERENCES visits(id),
    channel          TEXT NOT NULL CHECK (channel IN ('sms', 'email')),
    transport        TEXT NOT NULL,
    recipient_ct     BYTEA NOT NULL,
    recipient_masked TEXT NOT NULL,
    body_ct          BYTEA NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'failed')),
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    sent_at          BIGINT
);
CREATE INDEX notifications_visit ON notifications(tenant_id, visit_id);
CREATE INDEX notifications_due ON notifications(status, next_attempt_at);

-- Append-only, hash-chained per tenant: hash = SHA-256(prev_hash || canonical row).
CREATE TABLE audit (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    tenant_id  TEXT NOT NULL,
    at         BIGINT NOT NULL,
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

-- Statement-level, so that it refuses even an UPDATE or DELETE that matches no row (for
-- example one whose rows row-level security hides) and TRUNCATE, for every role including
-- the owner. The application role has no UPDATE, DELETE or TRUNCATE privilege on audit at
-- all, so for it the privilege check refuses first ("permission denied for table audit").
CREATE FUNCTION audit_append_only() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = public, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'audit rows are append-only (% refused)', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
REVOKE ALL ON FUNCTION audit_append_only() FROM PUBLIC;

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

-- Privileges of the application role: rows, never schema; audit is insert-and-read only.
GRANT SELECT, INSERT, UPDATE, DELETE
    ON tenants, staff, api_keys, visits, participants, links, notifications
    TO bedside_app;
GRANT SELECT, INSERT ON audit TO bedside_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO bedside_app;

-- Row-level security: every tenant table, one policy for the application role. The owner
-- is not subject to it (no FORCE), which the SECURITY DEFINER functions below rely on.
-- current_setting(…, true) is NULL when never set and '' after a SET LOCAL has ended; both
-- match no row.
ALTER TABLE tenants       ENABLE ROW LEVEL SECURITY;
ALTER TABLE staff         ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys      ENABLE ROW LEVEL SECURITY;
ALTER TABLE visits        ENABLE ROW LEVEL SECURITY;
ALTER TABLE participants  ENABLE ROW LEVEL SECURITY;
ALTER TABLE links         ENABLE ROW LEVEL SECURITY;
ALTER TABLE notifications ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit         ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_isolation ON tenants TO bedside_app
    USING (id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (id = NULLIF(current_setting('bedside.tenant_id', true), ''));
CREATE POLICY tenant_isolation ON staff TO bedside_app
    USING (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''));
CREATE POLICY tenant_isolation ON api_keys TO bedside_app
    USING (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''));
CREATE POLICY tenant_isolation ON visits TO bedside_app
    USING (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''));
CREATE POLICY tenant_isolation ON participants TO bedside_app
    USING (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''));
CREATE POLICY tenant_isolation ON links TO bedside_app
    USING (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''));
CREATE POLICY tenant_isolation ON notifications TO bedside_app
    USING (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''));
CREATE POLICY tenant_isolation ON audit TO bedside_app
    USING (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('bedside.tenant_id', true), ''));

-- Cross-tenant lookups the application needs before it knows the tenant. Each runs as the
-- owner (so past row-level security), returns only tenant ids (and outbox row ids), and is
-- executable by bedside_app alone. Parameters are referenced as $n: in an SQL function a
-- column of the same name (key_hash, code_hash) would otherwise win over the parameter.

-- The tenant of an API key, by the SHA-256 of the key; NULL if none.
CREATE FUNCTION bedside_tenant_of_key(key_hash bytea) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$ SELECT k.tenant_id FROM public.api_keys k WHERE k.key_hash = $1 $$;

-- The tenant of an API key, by its id (`bedside apikey revoke ID`); NULL if none.
CREATE FUNCTION bedside_tenant_of_api_key(key_id text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$ SELECT k.tenant_id FROM public.api_keys k WHERE k.id = $1 $$;

-- The tenant of a join link, by the hash of its code; NULL if none.
CREATE FUNCTION bedside_tenant_of_link(code_hash bytea) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$ SELECT l.tenant_id FROM public.links l WHERE l.code_hash = $1 $$;

-- Every tenant id, oldest first (audit verify without --tenant, the outbox, seeding).
CREATE FUNCTION bedside_tenant_ids() RETURNS SETOF text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$ SELECT t.id FROM public.tenants t ORDER BY t.created_at, t.id $$;

-- The tenant of a visit, by its id (cross-node signalling); NULL if none.
CREATE FUNCTION bedside_tenant_of_visit(visit_id text) RETURNS text
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$ SELECT v.tenant_id FROM public.visits v WHERE v.id = $1 $$;

-- Queued notifications due at now_ms, earliest first, at most lim: (tenant_id, id) pairs.
CREATE FUNCTION bedside_due_notifications(now_ms bigint, lim bigint)
    RETURNS TABLE (tenant_id text, id text)
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = public, pg_temp
AS $$
    SELECT n.tenant_id, n.id FROM public.notifications n
    WHERE n.status = 'queued' AND n.next_attempt_at <= $1
    ORDER BY n.next_attempt_at, n.id
    LIMIT $2
$$;

REVOKE ALL ON FUNCTION bedside_tenant_of_key(bytea)             FROM PUBLIC;
REVOKE ALL ON FUNCTION bedside_tenant_of_api_key(text)          FROM PUBLIC;
REVOKE ALL ON FUNCTION bedside_tenant_of_link(bytea)            FROM PUBLIC;
REVOKE ALL ON FUNCTION bedside_tenant_ids()                     FROM PUBLIC;
REVOKE ALL ON FUNCTION bedside_tenant_of_visit(text)            FROM PUBLIC;
REVOKE ALL ON FUNCTION bedside_due_notifications(bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bedside_tenant_of_key(bytea)             TO bedside_app;
GRANT EXECUTE ON FUNCTION bedside_tenant_of_api_key(text)          TO bedside_app;
GRANT EXECUTE ON FUNCTION bedside_tenant_of_link(bytea)            TO bedside_app;
GRANT EXECUTE ON FUNCTION bedside_tenant_ids()                     TO bedside_app;
GRANT EXECUTE ON FUNCTION bedside_tenant_of_visit(text)            TO bedside_app;
GRANT EXECUTE ON FUNCTION bedside_due_notifications(bigint, bigint) TO bedside_app;
