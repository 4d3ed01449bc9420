//! `log.level`, checked before the subscriber is built: a level (`info`) or comma-separated directives
//! whose every part is a level or `target=level` (`warn,herald=debug,tower_http=info`, spans and fields as
//! `tracing_subscriber::EnvFilter` reads them). EnvFilter alone would take `loud` as a target name with
//! every level enabled for it and none for anything else, so a typo would start with no logs at all.

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// Checks `text` as a `log.level`; the error says what is wrong, for a message naming the key.
pub(super) fn check(text: &str) -> Result<(), String> {
    let valid = "expected a level (trace, debug, info, warn, error, off) or directives such as \
                 'warn,herald=debug'";
    let directives: Vec<&str> = text.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if directives.is_empty() {
        return Err(format!("is empty: {valid}"));
    }
    for directive in directives {
        // `target[span{field=value}]=level`: the level follows the last '='.
        let level = directive.rsplit_once('=').map_or(directive, |(_, level)| level);
        if level.parse::<LevelFilter>().is_err() {
            return Err(format!("'{directive}' is not a level or a target=level directive: {valid}"));
        }
    }
    EnvFilter::try_new(text).map(drop).map_err(|error| format!("'{text}': {error}"))
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn levels_and_directives_pass_and_bare_words_do_not() {
        for good in ["info", "DEBUG", "off", "warn,herald=debug", "herald::worker=trace,tower_http=info"] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for bad in [
            "loud",
            "herald",
            "info,herald",
            "herald=loud",
            "",
            " , ",
            "herald[span{a=1}]",
            "warn, herald=debug",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
