//! Throwaway databases: a fresh Postgres database or SQLite file per test.

use sqlx::Connection;

/// The Postgres server tests use; `PORTICO_TEST_POSTGRES_URL` overrides it.
pub fn postgres_server_url() -> String {
    std::env::var("PORTICO_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The `host:port` of [`postgres_server_url`].
pub fn postgres_server_addr() -> std::net::SocketAddr {
    let url = postgres_server_url();
    let authority = url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host_port = if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:5432") };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("cannot resolve {host_port}"))
}

/// A database that exists for one test and is dropped afterwards.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { server: String, name: String },
    Sqlite { _dir: tempfile::TempDir },
}

impl TestDb {
    /// A new, empty Postgres database. Panics, saying how to fix it, when
    /// Postgres is not reachable.
    pub async fn postgres() -> Self {
        let server = postgres_server_url();
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!("Postgres is not reachable at {server} ({e}); run ./scripts/test, which starts one, or set PORTICO_TEST_POSTGRES_URL")
        });
        let name = format!("portico_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.expect("create test database");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
        Self { url: format!("{base}/{name}"), cleanup: Cleanup::Postgres { server: server.clone(), name } }
    }

    /// A new SQLite file in a temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let url = format!("sqlite://{}", dir.path().join("portico.db").display());
        Self { url, cleanup: Cleanup::Sqlite { _dir: dir } }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Cleanup::Postgres { server, name } = &self.cleanup {
            let (server, name) = (server.clone(), name.clone());
            // Drop runs outside any runtime guarantee: use a private one.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(async {
                    let mut admin = sqlx::PgConnection::connect(&server).await.ok()?;
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).execute(&mut admin).await.ok()
                })
            })
            .join();
        }
    }
}
