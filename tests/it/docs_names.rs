//! Every setting and flag the README and deploy/ tell a user to type exists: each `HERALD__SECTION__KEY`
//! names a field of the configuration structs, and each `--flag` after a `herald` or `herald-worker`
//! command (or in a Kubernetes `args:` list) is one of clap's. A renamed setting or flag then fails here
//! instead of being silently ignored by the process the user starts.

use std::{collections::BTreeSet, path::Path};

use clap::CommandFactory;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// README.md and every text file under deploy/.
fn documents() -> Vec<(String, String)> {
    fn walk(dir: &Path, found: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).expect("readable folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, found);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                found.push((path.display().to_string(), text));
            }
        }
    }
    let mut found = vec![(
        "README.md".to_string(),
        std::fs::read_to_string(Path::new(ROOT).join("README.md")).expect("README"),
    )];
    walk(&Path::new(ROOT).join("deploy"), &mut found);
    found
}

/// `section.key` for every field of the settings structs, read from their `Debug` form (every field
/// appears there, `None` ones included).
fn setting_keys() -> BTreeSet<String> {
    let debug = format!("{:?}", herald::config::Settings::defaults());
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    let mut depth = 0;
    let mut word = String::new();
    let mut chars = debug.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            c if c.is_ascii_alphanumeric() || c == '_' => {
                word.push(c);
                continue;
            }
            ':' if chars.peek() == Some(&' ') && !word.is_empty() => match depth {
                1 => section = word.clone(),
                2 => {
                    keys.insert(format!("{section}.{word}"));
                }
                _ => {}
            },
            _ => {}
        }
        word.clear();
    }
    keys
}

fn long_flags(command: &clap::Command, into: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            into.insert(format!("--{long}"));
        }
    }
    for sub in command.get_subcommands() {
        long_flags(sub, into);
    }
}

/// The flags of `herald` (clap's definition) and of `herald-worker` (its `#[arg(long)]` fields: the
/// binary's crate is not a dependency of these tests).
fn known_flags() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut herald = BTreeSet::from(["--help".to_string(), "--version".to_string()]);
    long_flags(&herald::cli::Cli::command(), &mut herald);
    let source = std::fs::read_to_string(Path::new(ROOT).join("workers/src/main.rs")).expect("worker source");
    let mut worker = BTreeSet::from(["--help".to_string(), "--version".to_string()]);
    let lines: Vec<&str> = source.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("#[arg(long") {
            let field =
                lines[index + 1..].iter().find(|l| !l.trim_start().starts_with("///")).expect("field");
            let name =
                field.trim().split(':').next().expect("name").trim_start_matches("pub ").replace('_', "-");
            worker.insert(format!("--{name}"));
        }
    }
    (herald, worker)
}

fn flags_in(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || "[]()|`\",=".contains(c))
        .filter(|token| token.starts_with("--") && token.len() > 2)
        .map(String::from)
        .collect()
}

/// `(binary, flags)` for each command line written in `text`.
fn command_lines(text: &str, subcommands: &BTreeSet<String>) -> Vec<(&'static str, Vec<String>)> {
    let mut found = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("args:") {
            let binary = if line.contains("\"--role\"") { "herald-worker" } else { "herald" };
            found.push((binary, flags_in(line)));
            continue;
        }
        for (at, _) in line.match_indices("herald") {
            let rest = &line[at..];
            let (binary, rest) = match rest.strip_prefix("herald-worker") {
                Some(rest) => ("herald-worker", rest),
                None => ("herald", &rest["herald".len()..]),
            };
            let rest = rest.strip_prefix(" -- ").map(|r| format!(" {r}")).unwrap_or_else(|| rest.to_string());
            let first = rest.split_whitespace().next().unwrap_or_default();
            let starts_a_command = if binary == "herald" {
                subcommands.contains(first) || (first.starts_with("--") && rest.starts_with(' '))
            } else {
                rest.starts_with(' ') && (first.starts_with("--") || first.starts_with('['))
            };
            if starts_a_command {
                let end = rest.find(['`', '|', '#']).unwrap_or(rest.len());
                found.push((binary, flags_in(&rest[..end])));
            }
        }
    }
    found
}

#[test]
fn every_setting_named_in_the_docs_exists() {
    let keys = setting_keys();
    assert!(keys.contains("delivery.allowed_cidrs") && keys.contains("queue.url"), "{keys:?}");
    let mut unknown = Vec::new();
    for (file, text) in documents() {
        for (at, _) in text.match_indices("HERALD__") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let parts: Vec<&str> = name.trim_start_matches("HERALD__").split("__").collect();
            if name == "HERALD__" || name == "HERALD__SECTION__KEY" {
                continue;
            }
            let key = parts.join(".").to_lowercase();
            if parts.len() != 2 || !keys.contains(&key) {
                unknown.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(unknown.is_empty(), "settings that do not exist: {unknown:#?}");
}

#[test]
fn every_flag_named_in_the_docs_exists() {
    let (herald, worker) = known_flags();
    let subcommands: BTreeSet<String> =
        herald::cli::Cli::command().get_subcommands().map(|sub| sub.get_name().to_string()).collect();
    let mut unknown = Vec::new();
    let mut checked = 0;
    for (file, text) in documents() {
        for (binary, flags) in command_lines(&text, &subcommands) {
            let known = if binary == "herald" { &herald } else { &worker };
            for flag in flags {
                checked += 1;
                if !known.contains(&flag) {
                    unknown.push(format!("{file}: {binary} {flag}"));
                }
            }
        }
    }
    assert!(checked > 5, "the scan finds the documented flags ({checked})");
    assert!(unknown.is_empty(), "flags that do not exist: {unknown:#?}");
}
