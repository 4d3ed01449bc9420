//! Webhook changes take effect for the next delivery: in one process (embedded, and the services mode
//! with its workers in this process) the API invalidates the shared webhook cache before it answers.
//! `workers/tests/webhook_changes.rs` runs the same scenario against two `herald-worker` processes.

use crate::{
    in_both_modes,
    support::{
        app::{Mode, TestApp},
        changes::{LONG_TTL, changes_govern_the_next_delivery},
    },
};

in_both_modes!(a_change_governs_the_next_delivery);

async fn a_change_governs_the_next_delivery(mode: Mode) {
    let app = TestApp::spawn_with(mode, |settings| {
        settings.delivery.webhook_cache_ttl = herald::config::HumanDuration(LONG_TTL);
    })
    .await;
    let took = changes_govern_the_next_delivery(&app, 3).await;
    eprintln!("{mode:?}: the event after PATCH url reached the new URL {took:?} after the response");
}
