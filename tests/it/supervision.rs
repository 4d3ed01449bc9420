//! `herald serve` never runs half-dead: in embedded mode, a stage that fails (made to, with the
//! debug-build hook `HERALD_TEST_FAIL_STAGE`) stops the API too, and the process exits non-zero within a
//! second, naming the stage.

use std::{process::Command, time::Duration};

use crate::support::process::{FAIL_AFTER_MS, FAIL_STAGE, assert_failed_promptly, run_until_exit};

/// Long enough for the process to be serving when the stage fails.
const FAIL_AFTER: Duration = Duration::from_millis(1500);

#[test]
fn a_failed_stage_stops_herald_serve() {
    for stage in ["fanout", "deliverer", "outbox-publisher"] {
        let dir = tempfile::tempdir().expect("dir");
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path())
            .env("HERALD_CONFIG_DIR", crate::support::empty_config_dir())
            .env("HERALD__LOG__LEVEL", "info")
            .env(FAIL_STAGE, stage)
            .env(FAIL_AFTER_MS, FAIL_AFTER.as_millis().to_string());
        let exit = run_until_exit(command, "Herald is listening", Duration::from_secs(30));
        assert_failed_promptly(&exit, stage, FAIL_AFTER);
    }
}
