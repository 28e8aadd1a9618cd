-- Row-level security check at the psql level. Run by `bedside_pg_rls_check` (scripts/pg):
-- connected as bedside_owner to a scratch database where migrations/postgres/*.sql have been
-- applied; it switches to the application role with `\c - bedside` (password from PGPASSFILE).
-- Every check prints an "ok" line or stops the script with "FAIL: …" (ON_ERROR_STOP).
\set ON_ERROR_STOP on
\pset footer off
\pset tuples_only on
\pset format unaligned
\set table '\\pset tuples_only off \\pset format aligned'
\set lines '\\pset tuples_only on \\pset format unaligned'
SET client_min_messages = warning;

\echo '== as bedside_owner: helpers, and two tenants'' rows (the owner is not subject to RLS)'
CREATE SCHEMA rls_check;
-- got = want, or stop.
CREATE FUNCTION rls_check.expect(label text, got text, want text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    IF got IS DISTINCT FROM want THEN
        RAISE EXCEPTION 'FAIL: %: got %, want %', label, coalesce(got, 'NULL'), coalesce(want, 'NULL');
    END IF;
    RETURN 'ok  ' || label || ' = ' || coalesce(got, 'NULL');
END $$;
-- stmt raises an error (its effects are rolled back), or stop.
CREATE FUNCTION rls_check.refused(label text, stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    BEGIN
        EXECUTE stmt;
        GET DIAGNOSTICS n = ROW_COUNT;
    EXCEPTION WHEN OTHERS THEN
        RETURN 'ok  ' || label || ': refused [' || SQLSTATE || '] ' || SQLERRM;
    END;
    RAISE EXCEPTION 'FAIL: % was accepted (% rows): %', label, n, stmt;
END $$;
-- The number of rows stmt affected.
CREATE FUNCTION rls_check.affected(stmt text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
    EXECUTE stmt;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
-- Every distinct tenant id visible in the tenant tables, sorted, comma-separated.
CREATE FUNCTION rls_check.visible_tenants() RETURNS text
LANGUAGE sql AS $$
    SELECT coalesce(string_agg(DISTINCT t, ',' ORDER BY t), '') FROM (
        SELECT id FROM tenants UNION ALL SELECT tenant_id FROM staff
        UNION ALL SELECT tenant_id FROM api_keys UNION ALL SELECT tenant_id FROM visits
        UNION ALL SELECT tenant_id FROM participants UNION ALL SELECT tenant_id FROM links
        UNION ALL SELECT tenant_id FROM notifications UNION ALL SELECT tenant_id FROM audit
    ) s(t)
$$;
-- Rows visible per tenant table.
CREATE FUNCTION rls_check.visible_rows() RETURNS TABLE (tbl text, visible bigint)
LANGUAGE sql AS $$
    SELECT 'tenants', count(*) FROM tenants UNION ALL
    SELECT 'staff', count(*) FROM staff UNION ALL
    SELECT 'api_keys', count(*) FROM api_keys UNION ALL
    SELECT 'visits', count(*) FROM visits UNION ALL
    SELECT 'participants', count(*) FROM participants UNION ALL
    SELECT 'links', count(*) FROM links UNION ALL
    SELECT 'notifications', count(*) FROM notifications UNION ALL
    SELECT 'audit', count(*) FROM audit
$$;
GRANT USAGE ON SCHEMA rls_check TO bedside_app;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA rls_check TO bedside_app;

INSERT INTO tenants (id, name, wrapped_data_key, key_provider, created_at) VALUES
    ('tenant-a', 'Clinic A', '\xaa', 'local', 1),
    ('tenant-b', 'Clinic B', '\xbb', 'local', 2);
INSERT INTO staff (id, tenant_id, role, display_name, email_ct, created_at) VALUES
    ('staff-a', 'tenant-a', 'clinician', 'Dr A', NULL, 1),
    ('staff-b', 'tenant-b', 'clinician', 'Dr B', NULL, 2);
INSERT INTO api_keys (id, tenant_id, staff_id, role, key_hash, created_at) VALUES
    ('key-a', 'tenant-a', NULL, 'admin', '\xa1a1', 1),
    ('key-b', 'tenant-b', NULL, 'admin', '\xb1b1', 2);
INSERT INTO visits (id, tenant_id, clinician_id, status, scheduled_at, duration_minutes,
                    media_backend, waiting_room, patient_name_ct, created_at, updated_at) VALUES
    ('visit-a1', 'tenant-a', 'staff-a', 'scheduled', 1000, 30, 'sfu', true,  '\x01', 1, 1),
    ('visit-a2', 'tenant-a', 'staff-a', 'scheduled', 2000, 30, 'sfu', false, '\x02', 1, 1),
    ('visit-b1', 'tenant-b', 'staff-b', 'scheduled', 1000, 15, 'sfu', true,  '\x03', 2, 2),
    ('visit-b2', 'tenant-b', 'staff-b', 'waiting',   2000, 15, 'sfu', true,  '\x04', 2, 2),
    ('visit-b3', 'tenant-b', 'staff-b', 'ended',     3000, 15, 'sfu', true,  '\x05', 2, 2);
INSERT INTO participants (id, tenant_id, visit_id, role, staff_id, created_at) VALUES
    ('part-a', 'tenant-a', 'visit-a1', 'clinician', 'staff-a', 1),
    ('part-b', 'tenant-b', 'visit-b1', 'clinician', 'staff-b', 2);
INSERT INTO links (id, tenant_id, visit_id, role, code_hash, created_at, expires_at) VALUES
    ('link-a', 'tenant-a', 'visit-a1', 'patient', '\xc0a0', 1, 9000),
    ('link-b', 'tenant-b', 'visit-b1', 'patient', '\xc0b0', 2, 9000);
INSERT INTO notifications (id, tenant_id, visit_id, channel, transport, recipient_ct,
                           recipient_masked, body_ct, status, next_attempt_at, created_at) VALUES
    ('notif-a1', 'tenant-a', 'visit-a1', 'sms',   'log', '\x01', '***-***-1234', '\x01', 'queued', 900, 1),
    ('notif-b1', 'tenant-b', 'visit-b1', 'email', 'log', '\x02', 'j***@example.com', '\x02', 'queued', 500, 2),
    ('notif-b2', 'tenant-b', 'visit-b1', 'email', 'log', '\x02', 'j***@example.com', '\x02', 'sent', 100, 2),
    ('notif-b3', 'tenant-b', 'visit-b2', 'sms',   'log', '\x02', '***-***-9876', '\x02', 'queued', 5000, 2);
INSERT INTO audit (id, tenant_id, at, actor, event, visit_id, outcome, details, prev_hash, hash) VALUES
    ('audit-a1', 'tenant-a', 1, 'system', 'visit.created', 'visit-a1', 'success', '{}', 'genesis', 'ha1'),
    ('audit-b1', 'tenant-b', 2, 'system', 'visit.created', 'visit-b1', 'success', '{}', 'genesis', 'hb1'),
    ('audit-b2', 'tenant-b', 3, 'system', 'visit.created', 'visit-b2', 'success', '{}', 'hb1', 'hb2');
:table
SELECT tenant_id, count(*) AS visits FROM visits GROUP BY tenant_id ORDER BY tenant_id;
:lines

\echo
\echo '== as bedside (login role, member of bedside_app), tenant A set for one transaction'
\c - bedside
SET client_min_messages = warning;
:table
SELECT current_user, pg_has_role('bedside_app', 'member') AS in_bedside_app,
       (SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user) AS bypassrls;
:lines
BEGIN;
SELECT 'SELECT set_config(''bedside.tenant_id'', ''tenant-a'', true) -> ' || set_config('bedside.tenant_id', 'tenant-a', true);
SELECT 'SELECT count(*) FROM visits -> ' || count(*) FROM visits;
SELECT rls_check.expect('SELECT count(*) FROM visits  (no tenant filter)',
                        (SELECT count(*) FROM visits)::text, '2');
:table
SELECT * FROM rls_check.visible_rows();
:lines
SELECT rls_check.expect('tenant ids visible in all 8 tenant tables', rls_check.visible_tenants(), 'tenant-a');
SELECT rls_check.expect('SELECT … FROM visits WHERE id = ''visit-b1''  (B''s visit by id)',
                        (SELECT count(*) FROM visits WHERE id = 'visit-b1')::text, '0');
SELECT rls_check.expect('UPDATE visits … WHERE tenant_id = ''tenant-b''  rows affected',
    rls_check.affected($$UPDATE visits SET notes_ct = '\xff' WHERE tenant_id = 'tenant-b'$$)::text, '0');
SELECT rls_check.expect('DELETE FROM notifications WHERE tenant_id = ''tenant-b''  rows affected',
    rls_check.affected($$DELETE FROM notifications WHERE tenant_id = 'tenant-b'$$)::text, '0');
SELECT rls_check.refused('INSERT INTO visits with tenant B''s id',
    $$INSERT INTO visits (id, tenant_id, clinician_id, status, scheduled_at, duration_minutes,
        media_backend, waiting_room, patient_name_ct, created_at, updated_at)
      VALUES ('visit-x', 'tenant-b', 'staff-b', 'scheduled', 1, 5, 'sfu', true, '\x00', 1, 1)$$);
SELECT rls_check.refused('INSERT INTO tenants a new tenant other than the one set',
    $$INSERT INTO tenants (id, name, wrapped_data_key, key_provider, created_at)
      VALUES ('tenant-c', 'C', '\x00', 'local', 3)$$);
SELECT rls_check.refused('UPDATE visits SET tenant_id = ''tenant-b''  (move A''s row to B)',
    $$UPDATE visits SET tenant_id = 'tenant-b' WHERE id = 'visit-a1'$$);
SELECT rls_check.refused('INSERT INTO audit with tenant B''s id',
    $$INSERT INTO audit (id, tenant_id, at, actor, event, outcome, details, prev_hash, hash)
      VALUES ('audit-x', 'tenant-b', 9, 'system', 'x', 'success', '{}', 'hb2', 'hx')$$);
SELECT rls_check.refused('UPDATE audit (own tenant''s row)',
    $$UPDATE audit SET outcome = 'refused' WHERE id = 'audit-a1'$$);
SELECT rls_check.refused('DELETE FROM audit (own tenant''s row)', $$DELETE FROM audit WHERE id = 'audit-a1'$$);
SELECT rls_check.refused('DELETE FROM audit (no WHERE)', $$DELETE FROM audit$$);
SELECT rls_check.refused('TRUNCATE audit', $$TRUNCATE audit$$);
-- What the application does do works: its own tenant's rows.
SELECT rls_check.expect('INSERT INTO visits with tenant A''s id  rows',
    rls_check.affected($$INSERT INTO visits (id, tenant_id, clinician_id, status, scheduled_at,
        duration_minutes, media_backend, waiting_room, patient_name_ct, created_at, updated_at)
      VALUES ('visit-a3', 'tenant-a', 'staff-a', 'scheduled', 3000, 5, 'sfu', true, '\x00', 3, 3)$$)::text, '1');
SELECT rls_check.expect('INSERT INTO audit with tenant A''s id (identity seq)  rows',
    rls_check.affected($$INSERT INTO audit (id, tenant_id, at, actor, event, outcome, details, prev_hash, hash)
      VALUES ('audit-a2', 'tenant-a', 9, 'system', 'visit.created', 'success', '{}', 'ha1', 'ha2')$$)::text, '1');
SELECT rls_check.expect('SELECT count(*) FROM visits  (after that insert)',
    (SELECT count(*) FROM visits)::text, '3');
SELECT rls_check.expect('single-use redemption of A''s link  rows',
    rls_check.affected($$UPDATE links SET redeemed_at = 5, participant_id = 'part-a'
        WHERE id = 'link-a' AND redeemed_at IS NULL AND revoked_at IS NULL AND expires_at > 5$$)::text, '1');
SELECT rls_check.expect('the same redemption again  rows',
    rls_check.affected($$UPDATE links SET redeemed_at = 6
        WHERE id = 'link-a' AND redeemed_at IS NULL AND revoked_at IS NULL AND expires_at > 6$$)::text, '0');
\echo '-- SECURITY DEFINER lookups (cross-tenant by design), still with tenant A set:'
SELECT rls_check.expect('bedside_tenant_of_key(''\xb1b1'')', bedside_tenant_of_key('\xb1b1'), 'tenant-b');
SELECT rls_check.expect('bedside_tenant_of_key(''\x00'')', bedside_tenant_of_key('\x00'), NULL);
SELECT rls_check.expect('bedside_tenant_of_api_key(''key-b'')', bedside_tenant_of_api_key('key-b'), 'tenant-b');
SELECT rls_check.expect('bedside_tenant_of_link(''\xc0b0'')', bedside_tenant_of_link('\xc0b0'), 'tenant-b');
SELECT rls_check.expect('bedside_tenant_of_link(''\x00'')', bedside_tenant_of_link('\x00'), NULL);
SELECT rls_check.expect('bedside_tenant_of_visit(''visit-b2'')', bedside_tenant_of_visit('visit-b2'), 'tenant-b');
SELECT rls_check.expect('bedside_tenant_of_visit(''nope'')', bedside_tenant_of_visit('nope'), NULL);
SELECT rls_check.expect('bedside_tenant_ids()',
    (SELECT string_agg(t, ',') FROM bedside_tenant_ids() t), 'tenant-a,tenant-b');
:table
SELECT * FROM bedside_due_notifications(1000, 10);
:lines
SELECT rls_check.expect('bedside_due_notifications(1000, 10)',
    (SELECT string_agg(tenant_id || '/' || id, ',') FROM bedside_due_notifications(1000, 10)),
    'tenant-b/notif-b1,tenant-a/notif-a1');
SELECT rls_check.expect('bedside_due_notifications(1000, 1)',
    (SELECT string_agg(tenant_id || '/' || id, ',') FROM bedside_due_notifications(1000, 1)),
    'tenant-b/notif-b1');
COMMIT;

\echo
\echo '== same session after COMMIT: the SET LOCAL tenant is gone'
SELECT rls_check.expect('current_setting(''bedside.tenant_id'', true)',
                        current_setting('bedside.tenant_id', true), '');
SELECT 'SELECT count(*) FROM visits -> ' || count(*) FROM visits;
SELECT rls_check.expect('SELECT count(*) FROM visits  (no tenant set)', (SELECT count(*) FROM visits)::text, '0');
SELECT rls_check.expect('tenant ids visible in all 8 tenant tables', rls_check.visible_tenants(), '');
SELECT rls_check.refused('INSERT INTO visits with tenant A''s id, no tenant set',
    $$INSERT INTO visits (id, tenant_id, clinician_id, status, scheduled_at, duration_minutes,
        media_backend, waiting_room, patient_name_ct, created_at, updated_at)
      VALUES ('visit-y', 'tenant-a', 'staff-a', 'scheduled', 1, 5, 'sfu', true, '\x00', 1, 1)$$);

\echo
\echo '== a fresh session as bedside: tenant never set, then tenant B'
\c - bedside
SET client_min_messages = warning;
SELECT rls_check.expect('current_setting(''bedside.tenant_id'', true)',
                        current_setting('bedside.tenant_id', true), NULL);
SELECT rls_check.expect('SELECT count(*) FROM visits  (never set)', (SELECT count(*) FROM visits)::text, '0');
BEGIN;
SELECT 'SELECT set_config(''bedside.tenant_id'', ''tenant-b'', true) -> ' || set_config('bedside.tenant_id', 'tenant-b', true);
SELECT rls_check.expect('SELECT count(*) FROM visits  (tenant B)', (SELECT count(*) FROM visits)::text, '3');
SELECT rls_check.expect('tenant ids visible in all 8 tenant tables', rls_check.visible_tenants(), 'tenant-b');
SELECT rls_check.expect('B''s audit chain (seq order)',
    (SELECT string_agg(hash, ',' ORDER BY seq) FROM audit), 'hb1,hb2');
COMMIT;
-- Nodes and placements: shared routing state, no RLS, the app role may write them.
SELECT rls_check.expect('INSERT INTO nodes + placements (no tenant set)  rows',
    (rls_check.affected($$INSERT INTO nodes (id, signaling_url, media_addr, load, started_at, heartbeat_at)
        VALUES ('node-1', 'ws://127.0.0.1:1/ws', '127.0.0.1:50000', 0, 1, 1)$$)
     + rls_check.affected($$INSERT INTO placements (visit_id, tenant_id, node_id, placed_at)
        VALUES ('visit-a1', 'tenant-a', 'node-1', 1)$$))::text, '2');
SELECT rls_check.expect('DELETE FROM nodes  rows',
    rls_check.affected($$DELETE FROM nodes WHERE id = 'node-1'$$)::text, '1');
SELECT rls_check.expect('placements left (ON DELETE CASCADE)', (SELECT count(*) FROM placements)::text, '0');
SELECT rls_check.refused('CREATE TABLE (the app role has no schema rights)', $$CREATE TABLE public.x (i int)$$);

\echo
\echo '== as bedside_owner: the append-only triggers hold for the owner too; catalog checks'
\c - bedside_owner
SET client_min_messages = warning;
SELECT rls_check.refused('owner: UPDATE audit', $$UPDATE audit SET outcome = 'refused' WHERE id = 'audit-a1'$$);
SELECT rls_check.refused('owner: DELETE FROM audit', $$DELETE FROM audit WHERE id = 'audit-a1'$$);
SELECT rls_check.refused('owner: DELETE FROM audit WHERE false (matches no row)', $$DELETE FROM audit WHERE false$$);
SELECT rls_check.refused('owner: TRUNCATE audit', $$TRUNCATE audit$$);
SELECT rls_check.expect('audit rows', (SELECT count(*) FROM audit)::text, '4');
SELECT rls_check.expect('tables with RLS enabled',
    (SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class
     WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relrowsecurity),
    'api_keys,audit,links,notifications,participants,staff,tenants,visits');
SELECT rls_check.expect('tables with a tenant_id column but no RLS',
    (SELECT string_agg(c.relname, ',') FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND NOT c.relrowsecurity
       AND a.attname = 'tenant_id'), 'placements');
SELECT rls_check.expect('tables with FORCE ROW LEVEL SECURITY',
    (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relforcerowsecurity)::text, '0');
:table
SELECT p.oid::regprocedure AS function, pg_get_userbyid(p.proowner) AS owner,
       p.prosecdef AS security_definer, p.proconfig AS config, p.proacl AS acl
FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace ORDER BY 1::text;
:lines
SELECT rls_check.expect('bedside_* functions that are SECURITY DEFINER with search_path, not PUBLIC-executable',
    (SELECT count(*) FROM pg_proc p
     WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'bedside\_%'
       AND p.prosecdef AND p.proconfig @> ARRAY['search_path=public, pg_temp']
       AND p.proacl IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0)
       AND has_function_privilege('bedside_app', p.oid, 'EXECUTE'))::text, '6');
SELECT rls_check.expect('privileges of bedside_app on audit',
    (SELECT string_agg(privilege_type, ',' ORDER BY privilege_type)
     FROM information_schema.role_table_grants
     WHERE grantee = 'bedside_app' AND table_name = 'audit'), 'INSERT,SELECT');
