//! The audit chain is append-only and tamper-evident: triggers refuse UPDATE and DELETE (on
//! PostgreSQL the application role is not even granted them), and once someone with the
//! owner's rights drops the triggers and edits, rehashes or removes a row, `verify_audit`
//! names the first bad row. Each tenant's chain stands alone.

mod support;

use api::audit::{ChainBreak, Entry};
use api::store::{Engine, Store};
use axum::http::StatusCode;
use support::{TestApp, minutes_from_now};

/// Some history in two tenants, interleaved.
async fn history() -> (TestApp, String) {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (other_tenant, other_admin) = t.new_tenant("other").await;
    let other = t.staff_with(&other_admin, "clinician", "Other Doc").await;
    let visit = t
        .visit_at(&cast.scheduler.key, &cast.clinician.id, minutes_from_now(0))
        .await;
    t.visit_at(&other_admin, &other.id, minutes_from_now(0))
        .await;
    let links = t.links(&cast.scheduler.key, &visit).await;
    t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    t.start(&visit, &links.patient)
        .await
        .problem(StatusCode::GONE, "link_used");
    t.send(support::Req::post(&format!("/api/visits/{visit}/end")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    (t, other_tenant)
}

/// Drops an append-only trigger, as an intruder with the owner's rights (or the SQLite file)
/// could.
async fn drop_trigger(t: &TestApp, name: &str) {
    let sql = match t.engine {
        Engine::Sqlite => format!("DROP TRIGGER {name}"),
        Engine::Postgres => format!("DROP TRIGGER {name} ON audit"),
    };
    // The trigger names are the constants of the tests below.
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&t.db)
        .await
        .expect("drop trigger");
}

async fn expect_break(t: &TestApp) -> ChainBreak {
    t.app
        .verify_audit(None)
        .await
        .expect("verification runs")
        .expect_err("the chain is broken")
}

#[tokio::test]
async fn the_chain_verifies_per_tenant() {
    let (t, other_tenant) = history().await;
    let mine = t.audit_of(&t.tenant_id).await;
    let theirs = t.audit_of(&other_tenant).await;
    let mut report = t
        .app
        .verify_audit(None)
        .await
        .expect("runs")
        .expect("intact");
    report.sort();
    let mut expected = vec![
        (t.tenant_id.clone(), mine.len() as u64),
        (other_tenant.clone(), theirs.len() as u64),
    ];
    expected.sort();
    assert_eq!(report, expected);
    assert_eq!(mine[0].prev_hash, api::audit::GENESIS);
    assert_eq!(theirs[0].prev_hash, api::audit::GENESIS);
    assert!(mine.windows(2).all(|w| w[1].prev_hash == w[0].hash));
}

#[tokio::test]
async fn triggers_refuse_update_and_delete() {
    let (t, _) = history().await;
    let rows = t.audit_of(&t.tenant_id).await;
    let target = &rows[rows.len() / 2];
    for sql in [
        "UPDATE audit SET outcome = 'success', reason = NULL WHERE seq = $1",
        "UPDATE audit SET details = '{}' WHERE seq = $1",
        "DELETE FROM audit WHERE seq = $1",
    ] {
        let err = sqlx::query(sql)
            .bind(target.seq)
            .execute(&t.db)
            .await
            .expect_err("the trigger refuses");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let delete = "DELETE FROM audit";
    let err = match &t.app.store {
        // SQLite has no roles: every connection is the application's.
        Store::Sqlite(_) => sqlx::query(delete).execute(&t.db).await.map(drop),
        Store::Postgres { pool } => sqlx::query(delete).execute(pool).await.map(drop),
    }
    .expect_err("the application's own connection is refused too");
    let refused = match t.engine {
        Engine::Sqlite => "append-only",
        // Not granted at all: the role never reaches the trigger.
        Engine::Postgres => "permission denied",
    };
    assert!(err.to_string().contains(refused), "{err}");
    assert_eq!(t.audit_of(&t.tenant_id).await, rows, "nothing changed");
    t.app
        .verify_audit(None)
        .await
        .expect("runs")
        .expect("still intact");
}

#[tokio::test]
async fn an_edited_row_is_found_at_its_seq() {
    let (t, other_tenant) = history().await;
    let rows = t.audit_of(&t.tenant_id).await;
    let target = rows
        .iter()
        .find(|r| r.event == "link.refused")
        .expect("a refusal row")
        .clone();
    assert_ne!(
        Some(&target),
        rows.last(),
        "a row in the middle of the chain"
    );
    drop_trigger(&t, "audit_no_update").await;
    // Hide the refusal.
    sqlx::query("UPDATE audit SET outcome = 'success', reason = NULL WHERE seq = $1")
        .bind(target.seq)
        .execute(&t.db)
        .await
        .expect("edit");

    let broken = expect_break(&t).await;
    assert_eq!(broken.seq, target.seq);
    assert_eq!(broken.id, target.id);
    assert_eq!(broken.tenant_id, t.tenant_id);
    assert!(broken.why.contains("altered"), "{}", broken.why);
    let same = t
        .app
        .verify_audit(Some(&t.tenant_id))
        .await
        .expect("runs")
        .expect_err("broken");
    assert_eq!(same.seq, target.seq);
    // The other tenant's chain is unaffected.
    t.app
        .verify_audit(Some(&other_tenant))
        .await
        .expect("runs")
        .expect("the other chain holds");
}

#[tokio::test]
async fn a_rehashed_row_breaks_the_next_link() {
    let (t, _) = history().await;
    let rows = t.audit_of(&t.tenant_id).await;
    let index = rows.len() / 2;
    let mut forged: Entry = rows[index].clone();
    forged.details = r#"{"forged":true}"#.to_owned();
    forged.hash = forged.expected_hash();
    drop_trigger(&t, "audit_no_update").await;
    sqlx::query("UPDATE audit SET details = $1, hash = $2 WHERE seq = $3")
        .bind(&forged.details)
        .bind(&forged.hash)
        .bind(forged.seq)
        .execute(&t.db)
        .await
        .expect("edit");
    let broken = expect_break(&t).await;
    assert_eq!(
        broken.seq,
        rows[index + 1].seq,
        "the next row no longer follows"
    );
    assert!(broken.why.contains("does not follow"), "{}", broken.why);
}

#[tokio::test]
async fn a_deleted_row_is_found_at_the_next_seq() {
    let (t, _) = history().await;
    let rows = t.audit_of(&t.tenant_id).await;
    let index = rows.len() / 2;
    drop_trigger(&t, "audit_no_delete").await;
    sqlx::query("DELETE FROM audit WHERE seq = $1")
        .bind(rows[index].seq)
        .execute(&t.db)
        .await
        .expect("delete");
    let broken = expect_break(&t).await;
    assert_eq!(broken.seq, rows[index + 1].seq);
}
