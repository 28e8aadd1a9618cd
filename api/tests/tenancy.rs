//! Tenants are walled off from each other. Through the API another tenant's resources are
//! 404 on both engines; on PostgreSQL the database itself also refuses: a query that forgets
//! its tenant filter, issued on purpose on the application's own pool as its own role, still
//! sees only the tenant its transaction is scoped to.

mod support;

use api::store::{Engine, Store};
use axum::http::StatusCode;
use sqlx::{PgPool, Postgres, Transaction};
use support::{Req, TestApp, minutes_from_now};

/// Two tenants with visits: this app's (two visits) and another (three visits).
async fn two_tenants() -> (TestApp, String, String) {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (other_tenant, other_admin) = t.new_tenant("other").await;
    let other = t.staff_with(&other_admin, "clinician", "Other Doc").await;
    let mine = t
        .visit_at(
            &cast.scheduler.key,
            &cast.clinician.id,
            minutes_from_now(30),
        )
        .await;
    t.visit_at(
        &cast.scheduler.key,
        &cast.clinician.id,
        minutes_from_now(60),
    )
    .await;
    for minutes in [30, 60, 90] {
        t.visit_at(&other_admin, &other.id, minutes_from_now(minutes))
            .await;
    }
    (t, other_tenant, mine)
}

#[tokio::test]
async fn another_tenants_visit_is_404_through_the_api() {
    let (t, _, mine) = two_tenants().await;
    let (_, stranger_admin) = t.new_tenant("stranger").await;
    for req in [
        Req::get(&format!("/api/visits/{mine}")),
        Req::post(&format!("/api/visits/{mine}/cancel")),
        Req::post(&format!("/api/visits/{mine}/links")),
    ] {
        t.send(req.key(&stranger_admin))
            .await
            .problem(StatusCode::NOT_FOUND, "not_found");
    }
}

/// A transaction on the app's own pool, scoped to `tenant` the way the store scopes it
/// (`None`: never scoped).
async fn scoped(pool: &PgPool, tenant: Option<&str>) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    if let Some(tenant) = tenant {
        sqlx::query("SELECT set_config('bedside.tenant_id', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .expect("scope");
    }
    tx
}

async fn count(tx: &mut Transaction<'static, Postgres>, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&mut **tx)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

#[tokio::test]
async fn a_query_without_its_tenant_filter_sees_only_its_tenant_on_postgres() {
    let (t, other_tenant, mine) = two_tenants().await;
    let Store::Postgres { pool } = &t.app.store else {
        assert_eq!(t.engine, Engine::Sqlite);
        eprintln!("SQLite has no roles; this test runs under BEDSIDE_TEST_DB=postgres");
        return;
    };
    // The database holds all five visits (the owner, whom RLS does not bind, counts them).
    assert_eq!(t.count("SELECT COUNT(*) FROM visits").await, 5);

    let mut tx = scoped(pool, Some(&t.tenant_id)).await;
    // Forgotten filters, on purpose.
    assert_eq!(count(&mut tx, "SELECT COUNT(*) FROM visits").await, 2);
    assert_eq!(count(&mut tx, "SELECT COUNT(*) FROM tenants").await, 1);
    let staff_tenants: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM staff")
        .fetch_all(&mut *tx)
        .await
        .expect("staff");
    assert_eq!(staff_tenants, vec![t.tenant_id.clone()]);
    // Naming the other tenant explicitly does not help either.
    let theirs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM visits WHERE tenant_id = $1")
        .bind(&other_tenant)
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(theirs, 0);
    let touched = sqlx::query("UPDATE visits SET status = 'cancelled' WHERE tenant_id = $1")
        .bind(&other_tenant)
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(touched.rows_affected(), 0);
    // Writing a row into the other tenant is refused outright.
    let err = sqlx::query("UPDATE visits SET tenant_id = $1 WHERE id = $2")
        .bind(&other_tenant)
        .bind(&mine)
        .execute(&mut *tx)
        .await
        .expect_err("moving a row to another tenant is refused");
    assert!(err.to_string().contains("row-level security"), "{err}");
    tx.rollback().await.expect("rollback");

    // A transaction never scoped sees no tenant's rows at all.
    let mut tx = scoped(pool, None).await;
    assert_eq!(count(&mut tx, "SELECT COUNT(*) FROM visits").await, 0);
    assert_eq!(count(&mut tx, "SELECT COUNT(*) FROM audit").await, 0);
    tx.rollback().await.expect("rollback");

    // And scoped to the other tenant, exactly its three.
    let mut tx = scoped(pool, Some(&other_tenant)).await;
    assert_eq!(count(&mut tx, "SELECT COUNT(*) FROM visits").await, 3);
    tx.rollback().await.expect("rollback");
    assert_eq!(
        t.count("SELECT COUNT(*) FROM visits").await,
        5,
        "nothing changed"
    );
}

#[tokio::test]
async fn nodes_name_only_the_callers_rooms_and_count_everyones() {
    let t = TestApp::new().await;
    if t.engine != Engine::Sqlite {
        eprintln!("on PostgreSQL nodes register by heartbeat: tests/cluster.rs covers that");
        return;
    }
    let cast = t.cast().await;
    let (mine, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    t.start(&mine, &links.patient).await.expect(StatusCode::OK);
    let (_, other_admin) = t.new_tenant("other").await;
    let other = t.staff_with(&other_admin, "clinician", "Other Doc").await;
    let theirs = t
        .visit_at(&other_admin, &other.id, minutes_from_now(0))
        .await;
    let code = t
        .send(Req::post(&format!("/api/visits/{theirs}/links")).key(&other_admin))
        .await
        .expect(StatusCode::CREATED)["patient"]["code"]
        .as_str()
        .expect("code")
        .to_owned();
    t.start(&theirs, &code).await.expect(StatusCode::OK);
    // A visit not yet started has no open room.
    t.visit_at(&cast.scheduler.key, &cast.clinician.id, minutes_from_now(0))
        .await;

    let nodes = t
        .send(Req::get("/api/nodes").key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    let nodes = nodes["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "SQLite has one node");
    assert_eq!(nodes[0]["rooms"], serde_json::json!([mine]));
    assert_eq!(nodes[0]["rooms_total"], 2);
    assert_eq!(nodes[0]["this_node"], true);
    t.send(Req::get("/api/nodes").key(&cast.scheduler.key))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
}
