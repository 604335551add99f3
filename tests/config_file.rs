//! `config/playtree.toml` documents the configuration: every key the server reads is in
//! it (so the file is the complete reference, and `config check` prints nothing it
//! lacks), every key there has a comment in its paragraph, and the file alone is a
//! valid configuration.

use playtree::ServerConfig;
use playtree::config::EMBEDDED_CONFIG;

/// Every key path under `value` (tables walked; a list of tables walked through each of
/// its tables, as `wheels[].id`).
fn key_paths(prefix: &str, value: &toml::Value, into: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, child) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                into.push(path.clone());
                key_paths(&path, child, into);
            }
        }
        toml::Value::Array(items) if items.iter().all(toml::Value::is_table) => {
            for item in items {
                key_paths(&format!("{prefix}[]"), item, into);
            }
        }
        _ => {}
    }
}

fn paths_of(text: &str) -> std::collections::BTreeSet<String> {
    let value: toml::Value = toml::from_str(text).expect("valid TOML");
    let mut paths = Vec::new();
    key_paths("", &value, &mut paths);
    paths.into_iter().collect()
}

#[test]
fn every_key_the_server_reads_is_in_the_embedded_file() {
    let effective = ServerConfig::from_toml_overrides("")
        .expect("the embedded file alone is valid")
        .to_redacted_toml()
        .expect("printable");
    let documented = paths_of(EMBEDDED_CONFIG);
    let missing: Vec<_> = paths_of(&effective)
        .into_iter()
        // Optional per-segment fields (a segment's `inventory`) need not be on every one.
        .filter(|path| !documented.contains(path) && !path.ends_with("inventory"))
        .collect();
    assert!(
        missing.is_empty(),
        "config/playtree.toml lacks these keys: {missing:?}"
    );
}

#[test]
fn every_key_in_the_embedded_file_has_a_comment_in_its_paragraph() {
    let mut undocumented = Vec::new();
    let mut section = String::new();
    let mut commented = false;
    for line in EMBEDDED_CONFIG.lines() {
        let line = line.trim();
        if line.is_empty() {
            commented = false;
        } else if line.starts_with('#') {
            commented = true;
        } else if line.starts_with('[') {
            // A comment right above a header documents the section's keys.
            section = line.to_owned();
        } else if let Some((key, _)) = line.split_once('=')
            && !key.trim().is_empty()
            && !line.starts_with('{')
            && !key.contains('{')
            && !commented
        {
            undocumented.push(format!("{section} {}", key.trim()));
        }
    }
    assert!(
        undocumented.is_empty(),
        "keys with no comment above them in their paragraph: {undocumented:?}"
    );
}

#[test]
fn a_bad_value_names_its_key_and_where_it_was_set() {
    let error = ServerConfig::from_toml_overrides("[limits]\nframe_bytes_max = 0\n")
        .expect_err("0 is not a frame size");
    let message = error.to_string();
    assert!(message.contains("`limits.frame_bytes_max`"), "{message}");
    assert!(message.contains("set in"), "{message}");
    let error = ServerConfig::from_toml_overrides("[limits]\nframe_bytes_maxx = 1\n")
        .expect_err("an unknown key");
    assert!(
        error.to_string().contains("limits.frame_bytes_maxx"),
        "{error}"
    );
}
