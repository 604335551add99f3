//! What the deployment files promise and the code must keep: every metric the Grafana
//! dashboard and the alert rules name exists on a server that has seen a little traffic;
//! the container image runs the documented command with an environment that is a valid
//! configuration; the ConfigMap's file is the embedded configuration.

mod common;

use common::{TestServer, WAIT};
use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The `playtree_*` metric names a text mentions.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("playtree_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The metric names a Prometheus text exposition holds (summaries by their base name).
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(|name| {
            name.trim_end_matches("_sum")
                .trim_end_matches("_count")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_name_exists() {
    let server = TestServer::start("[referral]\nsignup_rewards = [100]\n").await;
    // A little of everything: a referral claim, a room, spins until one pays, a chat.
    let (alice, _alice_events) = server.connect("alice").await;
    let code = alice.referral_code().await.expect("code");
    let (bob, _bob_events) = server.connect("bob").await;
    bob.claim_referral(&code).await.expect("claimed");
    let room = bob.quick_join_wheel(None).await.expect("joined").room;
    let (carol, _carol_events) = server.connect("carol").await;
    carol.quick_join_wheel(None).await.expect("joined");
    for attempt in 0.. {
        let spin = bob.spin(room, &format!("s{attempt}")).await.expect("spun");
        if spin.prize > 0 {
            break;
        }
    }
    bob.chat(room, "hello").await.expect("chat");

    let named: BTreeSet<String> = metric_names(&read("k8s/playtree-dashboard.json"))
        .union(&metric_names(&read("k8s/prometheusrule.yaml")))
        .cloned()
        .collect();
    assert!(named.len() > 10, "the files name the metrics: {named:?}");
    // The admin module starts the alerted series at 0, so each must also be recorded
    // where the thing it counts happens: a renamed counter would otherwise leave the
    // alert watching a 0 that never moves.
    let recorded = recorded_metrics();
    let unrecorded: Vec<_> = named.difference(&recorded).cloned().collect();
    assert!(
        unrecorded.is_empty(),
        "named in k8s/ but recorded nowhere in the code: {unrecorded:?}"
    );
    // Some are counted once the commit that causes them is durable: poll, bounded.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text) = server.get("/metrics").await;
        assert_eq!(status, 200);
        let missing: Vec<_> = named.difference(&exposed(&text)).cloned().collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "named in k8s/ but not exposed by the server: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The metric names the code records (`counter!`, `gauge!`, `histogram!`), outside the
/// admin module's list of series started at 0.
fn recorded_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, into: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("source dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, into);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                into.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root().join("src"), &mut files);
    walk(&root().join("actors/src"), &mut files);
    let mut names = BTreeSet::new();
    for file in files.iter().filter(|file| !file.ends_with("src/admin.rs")) {
        let text = std::fs::read_to_string(file).expect("source readable");
        for macro_call in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_call) {
                let after = text[at + macro_call.len()..].trim_start();
                if let Some(quoted) = after.strip_prefix('"')
                    && let Some(end) = quoted.find('"')
                {
                    names.insert(quoted[..end].to_owned());
                }
            }
        }
    }
    names
}

/// `NAME=VALUE` pairs of the last stage's `ENV` instructions (continuation lines joined).
fn runtime_env(dockerfile: &str) -> Vec<(String, String)> {
    let stage = dockerfile
        .rsplit_once("\nFROM ")
        .map_or(dockerfile, |(_, last)| last);
    let joined = stage.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .flat_map(|pairs| {
            pairs
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|pair| {
            pair.split_once('=')
                .map(|(name, value)| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// The JSON array of the last stage's `instruction` (exec form).
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("the Dockerfile has no {instruction}"));
    serde_json::from_str(line).unwrap_or_else(|error| {
        panic!("{instruction} must be in exec form (a JSON array) so the server is PID 1: {error}")
    })
}

#[test]
fn the_image_runs_the_documented_command_with_a_valid_configuration() {
    let dockerfile = read("Dockerfile");
    let mut command = exec_form(&dockerfile, "ENTRYPOINT");
    command.extend(exec_form(&dockerfile, "CMD"));
    assert_eq!(command, ["/usr/local/bin/playtree", "serve"]);
    let documented = format!("`{}`", command.join(" "));
    assert!(
        read("DEPLOY.md").contains(&documented),
        "DEPLOY.md documents the image's command {documented}"
    );
    assert!(
        dockerfile.contains("\nUSER 10001"),
        "the server runs as non-root"
    );

    // The image's environment, on its own, is a configuration the server accepts.
    let env = runtime_env(&dockerfile);
    assert!(
        env.iter()
            .any(|(name, _)| name == "PLAYTREE_SERVER__DATA_DIR")
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_playtree"))
        .args(["config", "check"])
        .env_clear()
        .envs(env)
        .env("PLAYTREE_AUTH__HS256_SECRET", "a-secret-nobody-may-read")
        .output()
        .expect("playtree config check runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        !printed.contains("a-secret-nobody-may-read") && printed.contains("<redacted>"),
        "the secret is redacted: {printed}"
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains("listen = \"0.0.0.0:7400\""), "{printed}");
    assert!(printed.contains("data_dir = \"/data\""), "{printed}");
}

#[test]
fn config_check_refuses_a_bad_value_naming_the_key_and_the_environment() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_playtree"))
        .args(["config", "check"])
        .env_clear()
        .env("PLAYTREE_LIMITS__FRAME_BYTES_MAX", "0")
        .output()
        .expect("playtree config check runs");
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("limits.frame_bytes_max") && said.contains("environment"),
        "{said}"
    );
}

#[test]
fn the_config_map_holds_the_embedded_configuration() {
    assert_eq!(
        read("k8s/playtree.toml"),
        read("config/playtree.toml"),
        "k8s/playtree.toml is a copy of config/playtree.toml: cp config/playtree.toml k8s/"
    );
}
