//! Tests of the settings: defaults, layering, validation.
use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let source = config::Environment::default()
        .source(Some(vars.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()));
    Settings::load_from(std::path::Path::new("/nonexistent"), None, source)
}

#[test]
fn a_bad_log_format_names_the_choices() {
    let error = load(&[("HERALD__LOG__FORMAT", "yaml")]).expect_err("yaml is no log format").to_string();
    assert!(error.contains("log.format") && error.contains("text or json"), "{error}");
    assert!(!error.contains("variant constructor"), "no library internals: {error}");
}

#[test]
fn a_missing_environment_file_or_config_dir_flag_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let error = Settings::load_from(dir.path(), Some("staging"), config::Environment::default())
        .expect_err("HERALD_ENV names a file that does not exist")
        .to_string();
    assert!(error.contains("staging.toml") && error.contains("HERALD_ENV"), "{error}");
    let error = check_config_dir_flag(std::path::Path::new("/nonexistent/herald-config"))
        .expect_err("a --config-dir that does not exist")
        .to_string();
    assert!(error.contains("/nonexistent/herald-config"), "{error}");
    assert!(check_config_dir_flag(dir.path()).is_ok());
}

#[test]
fn defaults_are_embedded_mode() {
    let settings = load(&[]).expect("defaults load");
    assert_eq!(settings.database.url.expose(), "sqlite://data/herald.db");
    assert!(settings.queue.url.is_none());
    assert_eq!(settings.server.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.delivery.retry_schedule.max_attempts(), 9);
    assert_eq!(settings.database_kind().ok(), Some(DatabaseKind::Sqlite));
    assert!(settings.admin.bind.is_none() && !settings.admin.public_metrics, "each binary picks its port");
}

#[test]
fn environment_overrides_nested_keys() {
    let settings = load(&[
        ("HERALD__DATABASE__URL", "postgres://postgres@127.0.0.1/herald"),
        ("HERALD__DELIVERY__RETRY_SCHEDULE", "1s,2s,4s"),
        ("HERALD__EVENTS__TYPES", "a.b, c.d"),
        ("HERALD__DELIVERY__ALLOWED_CIDRS", "10.0.0.0/8,127.0.0.1"),
    ])
    .expect("loads");
    assert_eq!(settings.database_kind().ok(), Some(DatabaseKind::Postgres));
    assert_eq!(
        settings.delivery.retry_schedule.0,
        vec![Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]
    );
    assert_eq!(settings.events.types, vec!["a.b", "c.d"]);
    assert_eq!(settings.delivery.allowed_cidrs.len(), 2);
}

#[test]
fn bad_values_name_their_key() {
    let error = load(&[("HERALD__DATABASE__URL", "mysql://x")]).expect_err("mysql is refused");
    assert!(error.to_string().contains("database.url"), "{error}");
    assert!(error.to_string().contains("mysql"), "{error}");
    let error = load(&[("HERALD__SERVER__BIND", "nonsense")]).expect_err("bad bind");
    assert!(error.to_string().contains("bind"), "{error}");
    let error = load(&[("HERALD__DELIVERY__TIMEOUT", "5 parsecs")]).expect_err("bad unit");
    assert!(error.to_string().contains("parsecs"), "{error}");
    let error = load(&[("HERALD__ADMIN__BIND", "localhost")]).expect_err("bad admin address");
    assert!(error.to_string().contains("admin.bind"), "{error}");
    let error = load(&[("HERALD__QUEUE__URL", "http://x")]).expect_err("bad queue");
    assert!(error.to_string().contains("queue.url"), "{error}");
    let error = load(&[("HERALD__SERVER__NO_SUCH_KEY", "1")]).expect_err("unknown key");
    assert!(error.to_string().contains("no_such_key"), "{error}");
    for lease in ["0s", "11m"] {
        let error =
            load(&[("HERALD__DELIVERY__CLAIM_LEASE", lease)]).expect_err("above 0, within stuck_after");
        assert!(error.to_string().contains("delivery.claim_lease"), "{error}");
    }
    assert_eq!(load(&[]).expect("defaults").delivery.claim_lease.get(), Duration::from_secs(30));
}

#[test]
fn secrets_are_redacted() {
    let settings = load(&[
        ("HERALD__DATABASE__URL", "postgres://u:hunter2@db/herald"),
        ("HERALD__AUTH__JWT_SECRET", "super-secret-jwt-signing-key"),
    ])
    .expect("loads");
    let debug = format!("{settings:?}");
    assert!(!debug.contains("hunter2") && !debug.contains("super-secret"), "{debug}");
    assert_eq!(redact_url("postgres://u:hunter2@db/herald"), "postgres://u:***@db/herald");
    assert_eq!(redact_url("postgres://postgres@db/herald"), "postgres://postgres@db/herald");
}

#[test]
fn durations_parse() {
    assert_eq!("250ms".parse::<HumanDuration>().map(HumanDuration::get), Ok(Duration::from_millis(250)));
    assert_eq!("2m".parse::<HumanDuration>().map(HumanDuration::get), Ok(Duration::from_secs(120)));
    assert!("-1s".parse::<HumanDuration>().is_err());
    assert!("s".parse::<HumanDuration>().is_err());
}

#[test]
fn retention_windows_are_checked() {
    let settings = load(&[]).expect("defaults load");
    assert!(settings.retention.enabled);
    assert_eq!(settings.retention.events.get(), std::time::Duration::from_secs(30 * 86_400));
    assert_eq!(settings.retention.attempts.get(), std::time::Duration::from_secs(14 * 86_400));
    let seconds = load(&[
        ("HERALD__RETENTION__EVENTS", "3s"),
        ("HERALD__RETENTION__ATTEMPTS", "2s"),
        ("HERALD__RETENTION__RESPONSE_BODIES", "1s"),
    ])
    .expect("windows of seconds are accepted");
    assert_eq!(seconds.retention.response_bodies.get(), std::time::Duration::from_secs(1));
    for (vars, key) in [
        (&[("HERALD__RETENTION__EVENTS", "0s")][..], "retention.events"),
        (&[("HERALD__RETENTION__ATTEMPTS", "31d")][..], "retention.attempts"),
        (&[("HERALD__RETENTION__RESPONSE_BODIES", "15d")][..], "retention.response_bodies"),
        (&[("HERALD__RETENTION__BATCH_SIZE", "0")][..], "retention.batch_size"),
        (&[("HERALD__RETENTION__INTERVAL", "0s")][..], "retention.interval"),
    ] {
        let error = load(vars).expect_err("refused").to_string();
        assert!(error.contains(key), "{key}: {error}");
    }
}

#[test]
fn the_scheduled_lane_takes_at_least_one_slot_and_fits_any_concurrency() {
    let error = load(&[("HERALD__DELIVERY__SCHEDULED_CONCURRENCY", "0")]).expect_err("none");
    assert!(error.to_string().contains("delivery.scheduled_concurrency"), "{error}");
    let small = load(&[("HERALD__DELIVERY__CONCURRENCY", "4")]).expect("a concurrency below the default 16");
    assert_eq!((small.delivery.concurrency, small.delivery.scheduled_concurrency), (4, 16));
}
