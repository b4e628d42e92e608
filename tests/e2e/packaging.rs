//! The Debian packages (`scripts/package.sh`), installed with `dpkg -i` into
//! a root of their own that holds a private copy of the PostgreSQL tree
//! (`scripts/private-pg-tree.sh`): a server started from that tree loads
//! the packaged library and records and verifies an event; the sidecar's
//! binaries, unit and sample configuration are where the docs say; removal
//! takes every file away. Nothing outside the test's directory is touched.

use authaudit_tests::recording::{record, Event};
use authaudit_tests::{free_port, repo_root};
use std::path::Path;
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dpkg(root: &Path) -> Command {
    let mut c = Command::new("dpkg");
    c.env("DPKG_ROOT", root)
        .arg(format!("--instdir={}", root.display()))
        .arg(format!("--admindir={}/var/lib/dpkg", root.display()))
        .args(["--force-script-chrootless", "--force-depends"]);
    c
}

struct Cluster<'a> {
    dir: std::path::PathBuf,
    bin: &'a Path,
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/testcluster.sh"))
            .env("PGBIN", self.bin)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// A directory of the test's own, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_packages_install_with_dpkg_run_a_real_cluster_and_remove_cleanly() {
    let tmp =
        Scratch(std::env::temp_dir().join(format!("authaudit-packages-{}", std::process::id())));
    std::fs::create_dir_all(tmp.path()).unwrap();
    let debs_dir = tmp.path().join("debs");
    let out = run(Command::new(repo_root().join("scripts/package.sh"))
        .args(["--debug", "--no-build", "--out"])
        .arg(&debs_dir));
    let debs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(debs.len(), 2, "{debs:?}");
    let version = env!("CARGO_PKG_VERSION");
    for (deb, name) in debs
        .iter()
        .zip(["postgresql-15-pg-authaudit", "authaudit-sidecar"])
    {
        let info = run(Command::new("dpkg-deb").args(["-f", deb, "Package", "Version"]));
        assert_eq!(
            String::from_utf8_lossy(&info.stdout),
            format!("Package: {name}\nVersion: {version}\n")
        );
    }

    // A root holding a private PostgreSQL tree and an empty dpkg database.
    let tree = tmp.path().join("tree");
    run(Command::new(repo_root().join("scripts/private-pg-tree.sh"))
        .arg("/usr/lib/postgresql/15/bin/pg_config")
        .arg(&tree));
    let root = tree.join("root");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(root.join(f), "").unwrap();
    }
    run(dpkg(&root).arg("-i").args(&debs));
    let bin = root.join("usr/lib/postgresql/15/bin");
    let extdir = root.join("usr/share/postgresql/15/extension");
    for f in [
        root.join("usr/lib/postgresql/15/lib/pg_authaudit.so"),
        extdir.join("pg_authaudit.control"),
        extdir.join(format!("pg_authaudit--{version}.sql")),
        extdir.join("pg_authaudit--0.8.0--0.9.0.sql"),
        extdir.join("pg_authaudit--0.1.0--0.2.0.sql"),
        root.join("usr/bin/authaudit-sidecar"),
        root.join("usr/bin/authaudit-import"),
        root.join("usr/bin/authaudit-mongowire"),
        root.join("lib/systemd/system/authaudit-sidecar.service"),
        root.join("etc/authaudit/sidecar.toml"),
        root.join("etc/authaudit/sidecar.env"),
    ] {
        assert!(f.exists(), "{} not installed", f.display());
    }
    for v in ["0.1.0", "0.8.0"] {
        let f = extdir.join(format!("pg_authaudit--{v}.sql"));
        assert!(
            !f.exists(),
            "an earlier release's {} is installed",
            f.display()
        );
    }

    // A server from that tree, preloading the packaged library.
    let port = free_port();
    let cluster = Cluster {
        dir: tmp.path().join("cluster"),
        bin: &bin,
    };
    run(Command::new(repo_root().join("scripts/testcluster.sh"))
        .env("PGBIN", &bin)
        .arg("start")
        .arg(&cluster.dir)
        .arg(port.to_string())
        .arg("--watch")
        .arg(std::process::id().to_string()));
    let mut c = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        postgres::NoTls,
    )
    .unwrap();
    c.batch_execute("CREATE EXTENSION pg_authaudit").unwrap();
    let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let packaged = root.join("usr/lib/postgresql/15/lib/pg_authaudit.so");
    assert!(
        maps.contains(&packaged.display().to_string()),
        "the server did not load the packaged library"
    );
    let installed: String = c
        .query_one("SELECT authaudit.version()", &[])
        .unwrap()
        .get(0);
    assert_eq!(installed, version);
    assert_eq!(record(&mut c, &Event::failed("acme", "alice")).seq, 1);
    let ok: bool = c
        .query_one("SELECT ok FROM authaudit.verify_chain('acme')", &[])
        .unwrap()
        .get(0);
    assert!(ok);
    drop(c);
    drop(cluster);

    // The sample configuration parses (the command then asks for its key).
    let out = Command::new(root.join("usr/bin/authaudit-sidecar"))
        .arg("--config")
        .arg(root.join("etc/authaudit/sidecar.toml"))
        .arg("witness-key")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no --witness-key-file"), "{err}");
    // The unit passes systemd's own check, pointed at the installed binary.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/authaudit-sidecar.service"))
        .unwrap()
        .replace(
            "/usr/bin/authaudit-sidecar",
            &root.join("usr/bin/authaudit-sidecar").display().to_string(),
        );
    let unit_file = tmp.path().join("authaudit-sidecar.service");
    std::fs::write(&unit_file, unit).unwrap();
    let check = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file));
    assert!(
        check.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // Purging takes every installed file away.
    run(dpkg(&root).args(["--purge", "authaudit-sidecar", "postgresql-15-pg-authaudit"]));
    for f in [
        root.join("usr/lib/postgresql/15/lib/pg_authaudit.so"),
        extdir.join("pg_authaudit.control"),
        root.join("usr/bin/authaudit-sidecar"),
        root.join("etc/authaudit/sidecar.toml"),
    ] {
        assert!(!f.exists(), "{} left after purge", f.display());
    }
}
