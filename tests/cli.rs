//! The `bedside` command line as API.md fixes it: JSON output, exit codes, audit verify.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn bedside(data_dir: &Path, args: &[&str]) -> Output {
    bedside_with(data_dir, &[], args)
}

fn bedside_with(data_dir: &Path, env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bedside"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_LOG")
        .output()
        .expect("bedside runs")
}

/// The environment that points `bedside` at a fresh database of the `scripts/pg` cluster, or
/// None outside `scripts/test`.
fn postgres_env(name: &str) -> Option<Vec<(String, String)>> {
    let admin = std::env::var("BEDSIDE_TEST_PG_ADMIN_URL").ok()?;
    let owner = std::env::var("BEDSIDE_TEST_PG_OWNER_URL_BASE").ok()?;
    let app = std::env::var("BEDSIDE_TEST_PG_APP_URL_BASE").ok()?;
    let database = format!("{name}_{}", std::process::id());
    let created = Command::new("psql")
        .arg(&admin)
        .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("CREATE DATABASE {database}"))
        .status()
        .expect("psql runs");
    assert!(created.success(), "CREATE DATABASE {database}");
    Some(vec![
        ("BEDSIDE_DATABASE__URL".into(), format!("{app}/{database}")),
        (
            "BEDSIDE_DATABASE__MIGRATE_URL".into(),
            format!("{owner}/{database}"),
        ),
    ])
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[test]
fn bad_config_value_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .args(["config", "check"])
        .env("BEDSIDE_HTTP__ADDR", "not-an-address")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.addr"));

    let file = dir.path().join("bedside.toml");
    std::fs::write(&file, "[visits]\njoin_before_minutes = -5\n").unwrap();
    let out = bedside(
        dir.path(),
        &["--config", file.to_str().unwrap(), "config", "check"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("visits.join_before_minutes"));

    std::fs::write(&file, "[turn]\nshared_secret = \"s3cret-value\"\n").unwrap();
    let out = bedside(
        dir.path(),
        &["--config", file.to_str().unwrap(), "config", "check"],
    );
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("<redacted>") && !shown.contains("s3cret-value"));
}

#[test]
fn tenant_and_apikey_commands() {
    tenant_and_apikey_commands_with(&[]);
}

#[test]
fn tenant_apikey_and_audit_commands_on_postgres() {
    let Some(env) = postgres_env("cli") else {
        eprintln!("no BEDSIDE_TEST_PG_ADMIN_URL: run through ./scripts/test");
        return;
    };
    tenant_and_apikey_commands_with(&env);
    let dir = tempfile::tempdir().unwrap();
    let verified = bedside_with(dir.path(), &env, &["audit", "verify"]);
    assert!(verified.status.success());
    let report = String::from_utf8_lossy(&verified.stdout);
    assert!(report.contains("rows checked"), "{report}");
    let shown =
        String::from_utf8_lossy(&bedside_with(dir.path(), &env, &["config", "check"]).stdout)
            .into_owned();
    assert!(
        shown.contains(":<redacted>@") && !shown.contains(&env[0].1),
        "{shown}"
    );
}

/// The tenant and API key commands, with `env` added to every command's environment.
fn tenant_and_apikey_commands_with(env: &[(String, String)]) {
    let dir = tempfile::tempdir().unwrap();
    let bedside = |dir: &Path, args: &[&str]| bedside_with(dir, env, args);
    let migrated = bedside(dir.path(), &["migrate"]);
    assert!(migrated.status.success());
    let tenant = json(&bedside(
        dir.path(),
        &["tenant", "create", "Clinic", "--json"],
    ));
    let tenant_id = tenant["tenant_id"].as_str().unwrap();
    assert!(
        tenant["admin_api_key"]
            .as_str()
            .unwrap()
            .starts_with("bsk_")
    );

    let key = json(&bedside(
        dir.path(),
        &[
            "apikey",
            "create",
            "--tenant",
            tenant_id,
            "--role",
            "scheduler",
            "--json",
        ],
    ));
    let key_id = key["id"].as_str().unwrap();
    assert!(key["api_key"].as_str().unwrap().starts_with("bsk_"));

    let clinician_without_staff = bedside(
        dir.path(),
        &[
            "apikey",
            "create",
            "--tenant",
            tenant_id,
            "--role",
            "clinician",
            "--json",
        ],
    );
    assert!(!clinician_without_staff.status.success());
    let unknown_tenant = bedside(
        dir.path(),
        &[
            "apikey", "create", "--tenant", "nope", "--role", "admin", "--json",
        ],
    );
    assert!(!unknown_tenant.status.success());

    assert!(
        bedside(dir.path(), &["apikey", "revoke", key_id])
            .status
            .success()
    );
    assert!(
        !bedside(dir.path(), &["apikey", "revoke", key_id])
            .status
            .success()
    );

    let mode = std::fs::metadata(dir.path().join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let mode = std::fs::metadata(dir.path().join("signing-key.p8"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn audit_verify_finds_the_first_tampered_row() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = json(&bedside(
        dir.path(),
        &["tenant", "create", "Clinic", "--json"],
    ));
    let tenant_id = tenant["tenant_id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        json(&bedside(
            dir.path(),
            &[
                "apikey", "create", "--tenant", &tenant_id, "--role", "admin", "--json",
            ],
        ));
    }
    let ok = bedside(dir.path(), &["audit", "verify"]);
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("rows checked"));

    let url = format!("sqlite://{}", dir.path().join("bedside.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let refused = sqlx::query("UPDATE audit SET actor = 'someone else' WHERE seq = 3")
        .execute(&pool)
        .await;
    assert!(refused.is_err(), "the trigger refuses UPDATE");
    sqlx::query("DROP TRIGGER audit_no_update")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit SET actor = 'someone else' WHERE seq = 3")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let broken = bedside(dir.path(), &["audit", "verify", "--tenant", &tenant_id]);
    assert_eq!(broken.status.code(), Some(1));
    let said = String::from_utf8_lossy(&broken.stdout);
    assert!(said.contains("seq 3"), "{said}");
}

#[test]
fn first_start_prints_the_admin_key_once() {
    use std::io::{BufRead as _, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let serve = |dir: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bedside"))
            .arg("--data-dir")
            .arg(dir)
            .args([
                "serve",
                "--udp",
                "127.0.0.1:0",
                "--http",
                &format!("127.0.0.1:{port}"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = std::thread::spawn(move || {
            BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
                .take_while(|l| !l.contains("listening on"))
                .collect::<Vec<_>>()
        });
        // Wait until the server says it listens, then stop it and collect what it printed.
        let log_lines = logs.join().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let printed: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        (printed.join("\n"), log_lines.join("\n"))
    };
    let (first, logs) = serve(dir.path());
    assert!(
        first.contains("bsk_"),
        "first start prints the key: {first}"
    );
    assert!(!logs.contains("bsk_"), "the key is never logged");
    let (second, _) = serve(dir.path());
    assert!(!second.contains("bsk_"), "the key is shown only once");
}

#[tokio::test]
async fn serve_speaks_https_from_cert_files() {
    use std::io::{BufRead as _, BufReader};
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.path().join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        certified.key_pair.serialize_pem(),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bedside"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "serve",
            "--udp",
            "127.0.0.1:0",
            "--http",
            &format!("127.0.0.1:{port}"),
        ])
        .env("BEDSIDE_HTTP__TLS_CERT", dir.path().join("cert.pem"))
        .env("BEDSIDE_HTTP__TLS_KEY", dir.path().join("key.pem"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let listening = tokio::task::spawn_blocking(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("listening on"))
    })
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let answer = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await;
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        listening.is_some_and(|l| l.contains("https://")),
        "announces https"
    );
    let answer = answer.expect("TLS handshake with the configured certificate");
    assert!(answer.status().is_success());
    assert!(
        answer.headers().get("strict-transport-security").is_some(),
        "HSTS under TLS"
    );
    assert!(plain.is_err(), "plain HTTP is not served on the TLS port");
}
