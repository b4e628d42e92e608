//! Installing next to a running server: every file is written beside its
//! destination and renamed over it, so sessions of a running cluster (which
//! preloaded the library) keep working, new sessions start, and nothing is
//! ever loaded half-written.

use authaudit_tests::recording::{self, Event};
use authaudit_tests::Cluster;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

#[test]
fn installing_beside_a_running_server_leaves_it_running() {
    let cluster = Cluster::shared();
    let db = cluster.fresh_db("install_running");
    let mut open = db.connect();
    let record = |c: &mut postgres::Client| {
        recording::record(c, &Event::failed("agency-1", "alice"));
    };
    record(&mut open);
    let pg_config = "/usr/lib/postgresql/15/bin/pg_config";
    let out = Command::new(pg_config).arg("--pkglibdir").output().unwrap();
    let lib = std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
        .join("pg_authaudit.so");
    let before = std::fs::metadata(&lib).unwrap().ino();
    let root = authaudit_tests::repo_root();
    // Install again the build that is installed (the debug one that `make
    // test` installs, or a release one), never another.
    let installed = std::fs::read(&lib).unwrap();
    let staged = |profile: &str| {
        let path = root
            .join(format!("target/install-stage-{profile}"))
            .join(lib.strip_prefix("/").unwrap());
        std::fs::read(path).is_ok_and(|b| b == installed)
    };
    let is_release = staged("release");
    assert!(
        is_release || staged("debug"),
        "the installed library is in neither staging directory: install it with \
         scripts/install-extension.sh first"
    );
    let mut cmd = Command::new(root.join("scripts/install-extension.sh"));
    cmd.arg("--no-build").env("PG_CONFIG", pg_config);
    if is_release {
        cmd.arg("--release");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        std::fs::metadata(&lib).unwrap().ino(),
        before,
        "the library was rewritten in place, not replaced"
    );
    // The open session, and a new one, keep recording.
    record(&mut open);
    record(&mut db.connect());
    let n: i64 = open
        .query_one("SELECT count(*) FROM authaudit.auth_log", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    let log = std::fs::read_to_string(cluster.dir().join("server.log")).unwrap();
    assert!(
        !log.contains("terminated by signal"),
        "a backend died:\n{log}"
    );
}
