//! The console in a real browser: starts Herald (both modes) and runs `tests/console/browser_test.py`,
//! which drives headless Chromium through Playwright against it (sign in, webhooks to real receivers,
//! a dead delivery replayed, API keys revoked, a member kept out, hostile responses inert, CSRF-less
//! posts refused) and saves a screenshot of each page. Skipped with a note when Chromium or Playwright
//! is missing, unless `HERALD_TEST_REQUIRE_BROWSER=1` (`.ci/run` installs both and sets it).

use std::{io::Write, path::PathBuf, process::Stdio};

use crate::{
    in_both_modes,
    support::app::{Mode, TestApp},
};

in_both_modes!(the_console_works_in_a_browser);

/// The browser binary: `HERALD_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    std::env::var_os("HERALD_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    if !chromium().exists() {
        return Some(format!("{} is not installed (apt-get install chromium)", chromium().display()));
    }
    let playwright = std::process::Command::new("python3").args(["-c", "import playwright"]).output();
    match playwright {
        Ok(output) if output.status.success() => None,
        _ => Some("the playwright Python package is not installed (pip install playwright)".into()),
    }
}

async fn the_console_works_in_a_browser(mode: Mode) {
    if let Some(reason) = missing() {
        assert!(
            std::env::var("HERALD_TEST_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "HERALD_TEST_REQUIRE_BROWSER=1 but {reason}"
        );
        let _ = writeln!(std::io::stderr(), "skipped: the console browser test ({reason})");
        return;
    }
    let app = TestApp::spawn(mode).await;
    let (_, member_key) = app.user_with_key("member@test.example", "member").await;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // Screenshots: where HERALD_CONSOLE_SCREENSHOTS says (tests/console/screenshots.sh: docs/console),
    // else a folder of this run, so every run takes them.
    let shots =
        std::env::var_os("HERALD_CONSOLE_SCREENSHOTS").filter(|_| mode == Mode::Embedded).map_or_else(
            || std::env::temp_dir().join(format!("herald-console-{}", uuid::Uuid::new_v4())),
            PathBuf::from,
        );
    let output = tokio::process::Command::new("python3")
        .arg(root.join("tests/console/browser_test.py"))
        .env("HERALD_CONSOLE_URL", &app.base)
        .env("HERALD_ADMIN_KEY", &app.admin_key)
        .env("HERALD_MEMBER_KEY", &member_key)
        .env("HERALD_CHROMIUM", chromium())
        .env("HERALD_CONSOLE_SCREENSHOTS", &shots)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let _ = writeln!(std::io::stderr(), "{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    for page in [
        "sign-in",
        "overview",
        "webhooks",
        "webhook",
        "deliveries",
        "delivery",
        "events",
        "event",
        "api-keys",
        "users",
    ] {
        let shot = shots.join(format!("{page}.png"));
        let bytes = std::fs::read(&shot).unwrap_or_else(|_| panic!("{} was taken", shot.display()));
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{page}.png is a PNG");
        assert_eq!(png_size(&bytes), (1280, 800), "{page}.png is 1280x800");
    }
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    (number(16), number(20))
}
