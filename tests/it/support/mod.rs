//! Shared test machinery: fresh databases ([`db`]), a running Herald on a random port ([`app`]), HTTP
//! helpers, and Herald binaries watched until they exit ([`process`]).

// Shared by every suite; each suite uses only some of the helpers.
#![allow(dead_code)]

pub mod app;
pub mod changes;
pub mod console;
pub mod db;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod receiver;

use std::io::Write;

/// An empty folder for `HERALD_CONFIG_DIR`, so a Herald binary a test starts reads no config files (a
/// folder that does not exist is an error when named explicitly).
pub fn empty_config_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("herald-test-no-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("an empty config folder");
    dir
}

/// Whether the PostgreSQL/RabbitMQ variants must run. With `HERALD_TEST_REQUIRE_SERVICES=1` (CI) a
/// missing service is a failure; otherwise those variants are skipped with a note.
pub fn services_required() -> bool {
    std::env::var("HERALD_TEST_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The value of a service variable, or `None` to skip (panics when services are required).
pub fn service_env(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Some(value),
        _ if services_required() => panic!("{name} is not set but HERALD_TEST_REQUIRE_SERVICES=1"),
        _ => {
            // Written to stderr directly, past the test harness's capture, so that a plain `cargo test`
            // shows which tests did not run instead of only counting them as passed.
            let test = std::thread::current().name().unwrap_or("a test").to_string();
            let _ = writeln!(std::io::stderr(), "skipped: {test} ({name} is not set)");
            None
        }
    }
}

/// Generates one test per mode for an `async fn(Mode)`: `embedded` (SQLite + in-process queue, always)
/// and `services` (PostgreSQL + RabbitMQ, when configured).
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$name($crate::support::app::Mode::Embedded).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn services() {
                    if $crate::support::app::Mode::services_available() {
                        super::$name($crate::support::app::Mode::Services).await;
                    }
                }
            }
        )*
    };
}

/// A response body as JSON (reqwest is built without its `json` feature, to keep the build lean).
pub async fn json_of(response: reqwest::Response) -> serde_json::Value {
    let bytes = response.bytes().await.expect("response body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}
