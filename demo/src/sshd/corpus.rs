//! The line forms of real sshd and PAM logs, each with the events it must
//! give (docs/import.md lists the same forms). Written from OpenSSH's
//! `auth.c`/`auth2*.c`/`auth1.c` (`auth_log`, `auth_maxtries_exceeded`,
//! `getpwnamallow`, the monitor's ` [preauth]` suffix, `log.c`'s syslog
//! escaping) and Linux-PAM's `pam_unix` (`_unix_verify_password`'s
//! `authentication failure`, `check pass; user unknown`, and
//! `_cleanup_failures`' `N more authentication failures`).

use super::*;

/// Reads `lines` as one file (year 2025, UTC, every line ended).
fn read(lines: &[&str]) -> FileEvents {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    read_bytes(text.into_bytes())
}

fn read_bytes(bytes: Vec<u8>) -> FileEvents {
    read_files(
        &[file("auth.log", bytes)],
        &[Some(YearChoice::Shared(2025))],
        &options("t"),
    )
    .unwrap()
    .remove(0)
}

/// An uncompressed file without a modification time.
fn file(name: &str, bytes: impl Into<Vec<u8>>) -> Input {
    Input {
        name: name.into(),
        bytes: bytes.into(),
        modified: None,
        gzip: false,
    }
}

/// UTC, the last line possibly cut short.
fn options(namespace: &str) -> ReadOptions<'_> {
    ReadOptions {
        namespace,
        utc_offset_s: 0,
        final_line_complete: false,
    }
}

/// `failed USER IP key=value…` for the metadata keys beyond the usual ones,
/// in key order (a workspace build may keep the map's insertion order).
fn show(e: &Event) -> String {
    let mut s = format!(
        "{} {} {}",
        if e.success { "accepted" } else { "failed" },
        e.user,
        e.ip.map_or("-".into(), |ip| ip.to_string())
    );
    let sorted: BTreeMap<&String, &Value> = e.metadata.iter().collect();
    for (k, v) in sorted {
        let usual = k == "host"
            || (k == "source" && v == "sshd")
            || (k == "invalid_user" && v == &Value::Bool(false));
        if usual {
            continue;
        }
        let v = match v {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

fn check(name: &str, lines: &[&str], events: &[&str], skipped: &[(Skip, usize)]) {
    let got = read(lines);
    let shown: Vec<String> = got.events.iter().map(show).collect();
    assert_eq!(shown, events, "{name}: events");
    let want: BTreeMap<Skip, usize> = skipped.iter().copied().collect();
    assert_eq!(got.skipped, want, "{name}: skipped");
}

const T: &str = "Nov 20 03:14:07 bastion";

#[test]
fn sshd_attempt_lines_of_every_openssh_era() {
    let cases: &[(&str, &str, &str)] = &[
        ("password, valid user", "sshd[4242]: Failed password for root from 203.0.113.10 port 52144 ssh2",
         "failed root 203.0.113.10 method=password port=52144 protocol=ssh2"),
        ("password, invalid user", "sshd[4242]: Failed password for invalid user oracle from 203.0.113.10 port 52144 ssh2",
         "failed oracle 203.0.113.10 invalid_user=true method=password port=52144 protocol=ssh2"),
        ("OpenSSH 3.x: illegal user", "sshd[4242]: Failed password for illegal user oracle from 203.0.113.10 port 52144 ssh2",
         "failed oracle 203.0.113.10 invalid_user=true method=password port=52144 protocol=ssh2"),
        ("public key with its fingerprint", "sshd[4242]: Accepted publickey for alice from 192.0.2.5 port 50022 ssh2: ED25519 SHA256:Zm9vYmFy",
         "accepted alice 192.0.2.5 method=publickey port=50022 protocol=ssh2"),
        ("certificate", "sshd[4242]: Accepted publickey for alice from 192.0.2.5 port 50022 ssh2: ED25519-CERT SHA256:Zm9v ID alice@example (serial 7) CA ED25519 SHA256:YmFy",
         "accepted alice 192.0.2.5 method=publickey port=50022 protocol=ssh2"),
        ("keyboard-interactive through PAM", "sshd[4242]: Failed keyboard-interactive/pam for root from 2001:db8::7 port 4000 ssh2",
         "failed root 2001:db8::7 method=keyboard-interactive/pam port=4000 protocol=ssh2"),
        ("method none", "sshd[4242]: Failed none for invalid user guest from 203.0.113.10 port 52144 ssh2",
         "failed guest 203.0.113.10 invalid_user=true method=none port=52144 protocol=ssh2"),
        ("GSSAPI with its principal", "sshd[4242]: Accepted gssapi-with-mic for alice from 192.0.2.5 port 50022 ssh2: alice@EXAMPLE.COM",
         "accepted alice 192.0.2.5 method=gssapi-with-mic port=50022 protocol=ssh2"),
        ("FIDO key, signature count", "sshd[4242]: Accepted publickey for alice from 192.0.2.5 port 50022 ssh2: signature count = 12",
         "accepted alice 192.0.2.5 method=publickey port=50022 protocol=ssh2"),
        ("logged by the unprivileged child", "sshd[4242]: Failed password for root from 203.0.113.10 port 52144 ssh2 [preauth]",
         "failed root 203.0.113.10 method=password port=52144 protocol=ssh2"),
        ("OpenSSH 9.8 sshd-session", "sshd-session[4242]: Failed password for root from 203.0.113.10 port 52144 ssh2",
         "failed root 203.0.113.10 method=password port=52144 protocol=ssh2"),
        ("an empty user name", "sshd[4242]: Failed password for invalid user  from 198.51.100.23 port 4022 ssh2",
         "failed (empty) 198.51.100.23 empty_user=true invalid_user=true method=password port=4022 protocol=ssh2"),
        ("a user name with spaces", "sshd[4242]: Failed password for invalid user a b from 198.51.100.23 port 4022 ssh2",
         "failed a b 198.51.100.23 invalid_user=true method=password port=4022 protocol=ssh2"),
        ("a user name holding a source form: the real one ends the line", "sshd[4242]: Failed password for invalid user x from 10.0.0.1 port 22 ssh2 from 203.0.113.5 port 4000 ssh2",
         "failed x from 10.0.0.1 port 22 ssh2 203.0.113.5 invalid_user=true method=password port=4000 protocol=ssh2"),
        ("ssh1: protocol named", "sshd[4242]: Failed password for root from 203.0.113.10 port 1022 ssh1",
         "failed root 203.0.113.10 method=password port=1022 protocol=ssh1"),
        ("ssh1 rhosts: the client's ruser", "sshd[4242]: Accepted rhosts-rsa for alice from 192.0.2.7 port 1022 ruser bob",
         "accepted alice 192.0.2.7 method=rhosts-rsa port=1022 protocol=ssh1 ruser=bob"),
        ("ssh1 rhosts: a ruser that names another address", "sshd[4242]: Failed rhosts for alice from 192.0.2.7 port 1022 ruser evil from 203.0.113.9",
         "failed alice 192.0.2.7 method=rhosts port=1022 protocol=ssh1 ruser=evil from 203.0.113.9"),
    ];
    for (name, line, event) in cases {
        check(name, &[&format!("{T} {line}")], &[event], &[]);
    }
}

#[test]
fn syslog_envelopes_of_other_formats() {
    let event = "failed root 203.0.113.10 method=password port=52144 protocol=ssh2";
    for line in [
        "Nov 20 03:14:07 sol10 sshd[603]: [ID 800047 auth.info] Failed password for root from 203.0.113.10 port 52144 ssh2",
        "<38>Nov 20 03:14:07 bastion sshd[1]: Failed password for root from 203.0.113.10 port 52144 ssh2",
        "2025-11-20T03:14:07.123456+00:00 bastion sshd[1]: Failed password for root from 203.0.113.10 port 52144 ssh2",
        "2025-11-20T04:14:07+0100 bastion sshd[1]: Failed password for root from 203.0.113.10 port 52144 ssh2",
        "<38>1 2025-11-20T03:14:07.5Z bastion sshd 1 - - Failed password for root from 203.0.113.10 port 52144 ssh2",
        "<38>1 2025-11-20T03:14:07Z bastion sshd 1 ID47 [origin ip=\"192.0.2.1\"] \u{feff}Failed password for root from 203.0.113.10 port 52144 ssh2",
    ] {
        let got = read(&[line]);
        assert_eq!(got.events.iter().map(show).collect::<Vec<_>>(), [event], "{line}");
        assert_eq!(
            iso_second(got.events[0].at_us),
            "2025-11-20T03:14:07",
            "{line}"
        );
    }
}

fn iso_second(us: i64) -> String {
    authaudit_core::lockout_effect::iso_utc(us)[..19].to_owned()
}

#[test]
fn incomplete_attempt_lines_are_never_recorded_from_a_prefix() {
    for line in [
        "sshd[1]: Failed password for root from 203.0.113.6",
        "sshd[1]: Failed password for root from 203.0.113.60 port",
        "sshd[1]: Failed password for root from 203.0.113.60 port 5487",
        "sshd[1]: Failed password for root from 203.0.113.60 port 54874 ss",
        "sshd[1]: Failed password for root from 203.0.113.60 port 054874 ssh2",
        "sshd[1]: Failed password for root from 203.0.113.60 port 54874 ssh2: detail a password line never has",
        "sshd[1]: Failed password for root",
        "sshd[1]: message repeated 2 times: [ Failed password for root from 203.0.113.60 port 54874 ssh2",
        "sshd[1]: error: maximum authentication attempts exceeded for root from 203.0.113.60 port 5",
        "sshd[1]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser=",
    ] {
        check(line, &[&format!("{T} {line}")], &[], &[(Skip::IncompleteAttempt, 1)]);
    }
}

#[test]
fn other_lines_are_skipped_with_their_reason() {
    for (line, why) in [
        ("sshd[1]: Invalid user oracle from 203.0.113.10 port 1", Skip::InvalidUserNotice),
        ("sshd[1]: Illegal user oracle from 203.0.113.10", Skip::InvalidUserNotice),
        ("sshd[1]: Connection closed by 203.0.113.10 port 1 [preauth]", Skip::NotAnAttempt),
        ("sshd[1]: Connection closed by 173.234.31.186 [preauth]", Skip::NotAnAttempt),
        ("sshd[1]: Received disconnect from 187.141.143.180: 11: Bye Bye [preauth]", Skip::NotAnAttempt),
        ("sshd[1]: Disconnecting: Too many authentication failures for root [preauth]", Skip::NotAnAttempt),
        ("sshd[1]: Postponed keyboard-interactive for root from 203.0.113.10 port 1 ssh2 [preauth]", Skip::Intermediate),
        ("sshd[1]: Partial publickey for root from 203.0.113.10 port 1 ssh2: ED25519 SHA256:x", Skip::Intermediate),
        ("sshd[1]: error: PAM: Authentication failure for root from host.example.com", Skip::PamDetail),
        ("sshd[1]: pam_sss(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=192.0.2.1 user=bob", Skip::OtherPamModule),
        ("sshd[1]: pam_unix(sshd:session): session opened for user root by (uid=0)", Skip::NotAnAttempt),
        ("sshd[1]: PAM service(sshd) ignoring max retries; 6 > 3", Skip::NotAnAttempt),
        ("CRON[9]: pam_unix(cron:session): session opened for user root", Skip::NotSshd),
        ("sudo:   alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/true", Skip::NotSshd),
    ] {
        check(line, &[&format!("{T} {line}")], &[], &[(why, 1)]);
    }
    check("garbage", &["garbage", ""], &[], &[(Skip::Malformed, 2)]);
}

#[test]
fn a_pam_failure_beside_its_sshd_line_is_one_attempt() {
    check(
        "Ubuntu: pam_unix, then sshd",
        &[
            "Nov 20 03:14:05 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
            "Nov 20 03:14:07 h sshd[7]: Failed password for root from 203.0.113.10 port 4000 ssh2",
            "Nov 20 03:14:11 h sshd[7]: Failed password for root from 203.0.113.10 port 4000 ssh2",
            "Nov 20 03:14:15 h sshd[7]: Failed password for root from 203.0.113.10 port 4000 ssh2",
            "Nov 20 03:14:15 h sshd[7]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
        ],
        &["failed root 203.0.113.10 method=password port=4000 protocol=ssh2"; 3],
        &[(Skip::PamDetail, 2)],
    );
    check(
        "an unknown user: check pass, failure, then sshd",
        &[
            "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
            "Dec 10 06:55:46 LabSZ sshd[24200]: input_userauth_request: invalid user webmaster [preauth]",
            "Dec 10 06:55:46 LabSZ sshd[24200]: pam_unix(sshd:auth): check pass; user unknown",
            "Dec 10 06:55:46 LabSZ sshd[24200]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=173.234.31.186 ",
            "Dec 10 06:55:48 LabSZ sshd[24200]: Failed password for invalid user webmaster from 173.234.31.186 port 38926 ssh2",
            "Dec 10 06:55:48 LabSZ sshd[24200]: Connection closed by 173.234.31.186 [preauth]",
        ],
        &["failed webmaster 173.234.31.186 invalid_user=true method=password port=38926 protocol=ssh2"],
        &[
            (Skip::InvalidUserNotice, 1),
            (Skip::PamDetail, 2),
            (Skip::NotAnAttempt, 2),
        ],
    );
    check(
        "keyboard-interactive: PAM in a child process",
        &[
            "Nov 20 03:14:05 h sshd[8]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
            "Nov 20 03:14:07 h sshd[7]: Failed keyboard-interactive/pam for root from 203.0.113.10 port 4000 ssh2",
        ],
        &["failed root 203.0.113.10 method=keyboard-interactive/pam port=4000 protocol=ssh2"],
        &[(Skip::PamDetail, 1)],
    );
}

#[test]
fn pam_only_failures_are_attempts_of_their_own() {
    check(
        "Linux-PAM 0.7x: sshd(pam_unix), unknown user",
        &[
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown",
            "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=218.188.2.4 ",
        ],
        &["failed (unknown) 218.188.2.4 invalid_user=true rhost=218.188.2.4 source=pam_unix unknown_user=true"],
        &[(Skip::PamDetail, 1)],
    );
    check(
        "a known user, a host name for rhost",
        &["Jun 15 02:04:59 combo sshd(pam_unix)[20882]: authentication failure; logname= uid=0 euid=0 tty=NODEVssh ruser= rhost=220-135-151-1.hinet-ip.hinet.net  user=root"],
        &["failed root - rhost=220-135-151-1.hinet-ip.hinet.net source=pam_unix"],
        &[],
    );
    check(
        "PAM only, then N more: every attempt",
        &[
            "Nov 20 03:14:05 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
            "Nov 20 03:14:15 h sshd[7]: PAM 2 more authentication failures; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
        ],
        &[
            "failed root 203.0.113.10 rhost=203.0.113.10 source=pam_unix",
            "failed root 203.0.113.10 pam_more_failures=true rhost=203.0.113.10 source=pam_unix",
            "failed root 203.0.113.10 pam_more_failures=true rhost=203.0.113.10 source=pam_unix",
        ],
        &[],
    );
    check(
        "an unknown user named by sshd's notice; the source from the session",
        &[
            "Nov 20 03:14:04 h sshd[7]: Invalid user admin from 203.0.113.10 port 4000",
            "Nov 20 03:14:05 h sshd[7]: pam_unix(sshd:auth): check pass; user unknown",
            "Nov 20 03:14:05 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=scanner.example.net ",
        ],
        &["failed admin 203.0.113.10 invalid_user=true rhost=scanner.example.net source=pam_unix"],
        &[(Skip::InvalidUserNotice, 1), (Skip::PamDetail, 1)],
    );
    check(
        "a PAM failure whose sshd line is not the same process's",
        &[
            "Nov 20 03:14:05 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
            "Nov 20 03:14:07 h sshd[9]: Failed password for root from 203.0.113.10 port 4000 ssh2",
        ],
        &[
            "failed root 203.0.113.10 rhost=203.0.113.10 source=pam_unix",
            "failed root 203.0.113.10 method=password port=4000 protocol=ssh2",
        ],
        &[],
    );
}

#[test]
fn maximum_attempts_sessions_keep_their_source() {
    check(
        "no Failed line (LogLevel ERROR): the notice is the attempt",
        &["Nov 20 03:14:07 h sshd[7]: error: maximum authentication attempts exceeded for invalid user  from 203.0.113.7 port 5022 ssh2 [preauth]"],
        &["failed (empty) 203.0.113.7 empty_user=true invalid_user=true max_attempts_exceeded=true port=5022 protocol=ssh2"],
        &[],
    );
    check(
        "PAM failures with a host name: the session's source",
        &[
            "Nov 20 03:14:05 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=scanner.example.net  user=root",
            "Nov 20 03:14:15 h sshd[7]: error: maximum authentication attempts exceeded for root from 203.0.113.7 port 5022 ssh2 [preauth]",
        ],
        &["failed root 203.0.113.7 rhost=scanner.example.net source=pam_unix"],
        &[(Skip::NotAnAttempt, 1)],
    );
    check(
        "with Failed lines: a notice only",
        &[
            "Nov 20 03:14:05 h sshd[7]: Failed password for root from 203.0.113.7 port 5022 ssh2",
            "Nov 20 03:14:15 h sshd[7]: error: maximum authentication attempts exceeded for root from 203.0.113.7 port 5022 ssh2 [preauth]",
        ],
        &["failed root 203.0.113.7 method=password port=5022 protocol=ssh2"],
        &[(Skip::NotAnAttempt, 1)],
    );
}

/// A clock stepped back (NTP, a local time leaving summer time) dates a
/// process's later lines before its earlier ones, and a central log holds
/// hosts whose clocks disagree; a process's lines stay one session, read in
/// their order in the file.
#[test]
fn lines_dated_out_of_order_keep_their_process_together() {
    check(
        "a notice after a Failed line dated 16 minutes later",
        &[
            "Nov 20 03:30:05 h sshd[7]: Failed password for root from 203.0.113.7 port 5022 ssh2",
            "Nov 20 03:14:15 h sshd[7]: error: maximum authentication attempts exceeded for root from 203.0.113.7 port 5022 ssh2 [preauth]",
        ],
        &["failed root 203.0.113.7 method=password port=5022 protocol=ssh2"],
        &[(Skip::NotAnAttempt, 1)],
    );
    check(
        "the connection's source across a line dated out of the window",
        &[
            "Nov 20 03:14:06 h sshd[7]: Connection from 192.0.2.7 port 1022 on 192.0.2.1 port 22",
            "Nov 20 03:40:00 h sshd[7]: Postponed keyboard-interactive for alice from 192.0.2.7 port 1022 ssh2 [preauth]",
            "Nov 20 03:14:07 h sshd[7]: Failed rhosts-rsa for alice from 192.0.2.7 port 1022 ruser x from 203.0.113.9 port 22 ssh1",
        ],
        &["failed alice 192.0.2.7 method=rhosts-rsa port=1022 protocol=ssh1 ruser=x from 203.0.113.9 port 22 ssh1"],
        &[(Skip::NotAnAttempt, 1), (Skip::Intermediate, 1)],
    );
    check(
        "PAM's N more across a line dated out of the window",
        &[
            "Nov 20 03:14:05 h sshd[7]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
            "Nov 20 03:14:07 h sshd[7]: Failed password for root from 203.0.113.10 port 4000 ssh2",
            "Nov 20 03:14:11 h sshd[7]: Failed password for root from 203.0.113.10 port 4000 ssh2",
            "Nov 20 03:40:00 h sshd[7]: Connection closed by 203.0.113.10 port 4000 [preauth]",
            "Nov 20 03:14:15 h sshd[7]: PAM 1 more authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
        ],
        &["failed root 203.0.113.10 method=password port=4000 protocol=ssh2"; 2],
        &[(Skip::PamDetail, 2), (Skip::NotAnAttempt, 1)],
    );
    check(
        "keyboard-interactive beside another host's line on another clock",
        &[
            "Nov 20 03:14:05 h sshd[8]: pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.10  user=root",
            "Nov 20 04:00:00 g sshd[3]: Failed password for bob from 198.51.100.4 port 4100 ssh2",
            "Nov 20 03:14:07 h sshd[7]: Failed keyboard-interactive/pam for root from 203.0.113.10 port 4000 ssh2",
        ],
        &[
            "failed bob 198.51.100.4 method=password port=4100 protocol=ssh2",
            "failed root 203.0.113.10 method=keyboard-interactive/pam port=4000 protocol=ssh2",
        ],
        &[(Skip::PamDetail, 1)],
    );
}

#[test]
fn a_client_supplied_source_form_never_decides_the_source() {
    let ambiguous = "Nov 20 03:14:07 h sshd[7]: Failed rhosts-rsa for alice from 192.0.2.7 port 1022 ruser x from 203.0.113.9 port 22 ssh1";
    check(
        "alone: refused with its reason",
        &[ambiguous],
        &[],
        &[(Skip::AmbiguousSource, 1)],
    );
    check(
        "the connection's source decides",
        &[
            "Nov 20 03:14:06 h sshd[7]: Connection from 192.0.2.7 port 1022 on 192.0.2.1 port 22",
            ambiguous,
        ],
        &["failed alice 192.0.2.7 method=rhosts-rsa port=1022 protocol=ssh1 ruser=x from 203.0.113.9 port 22 ssh1"],
        &[(Skip::NotAnAttempt, 1)],
    );
    check(
        "a public key line whose user holds a source and a detail",
        &[
            "Nov 20 03:14:07 h sshd[7]: Failed publickey for x from 10.0.0.1 port 22 ssh2: RSA SHA256:a from 203.0.113.5 port 4000 ssh2: RSA SHA256:b",
            "Nov 20 03:14:08 h sshd[7]: Connection closed by authenticating user x from 10.0.0.1 port 22 ssh2: RSA SHA256:a 203.0.113.5 port 4000 [preauth]",
        ],
        &["failed x from 10.0.0.1 port 22 ssh2: RSA SHA256:a 203.0.113.5 method=publickey port=4000 protocol=ssh2"],
        &[(Skip::NotAnAttempt, 1)],
    );
}

#[test]
fn bytes_that_are_not_utf8_are_replaced_in_sshd_lines_and_ignored_elsewhere() {
    let mut bytes = b"Nov 20 03:14:07 h sudo: caf\xe9 : TTY=pts/0 ; COMMAND=/bin/true\n".to_vec();
    bytes.extend(b"Nov 20 03:14:08 h sshd[7]: Failed password for invalid user caf\xe9 from 203.0.113.10 port 4000 ssh2\n");
    let got = read_bytes(bytes);
    assert_eq!(
        got.events.iter().map(show).collect::<Vec<_>>(),
        ["failed caf\u{fffd} 203.0.113.10 invalid_user=true method=password not_utf8=true port=4000 protocol=ssh2"]
    );
    assert_eq!(got.not_utf8_lines, 1);
    assert_eq!(got.skipped, BTreeMap::from([(Skip::NotSshd, 1)]));
}

#[test]
fn a_last_line_without_a_line_ending_is_skipped_unless_said_complete() {
    let text = b"Nov 20 03:14:07 h sshd[7]: Failed password for root from 203.0.113.60 port 54874 ssh2\nNov 20 03:14:08 h sshd[7]: Failed password for root from 203.0.113.6".to_vec();
    let got = read_bytes(text.clone());
    assert_eq!(got.events.len(), 1);
    assert!(got.unterminated);
    assert_eq!(got.skipped, BTreeMap::from([(Skip::Unterminated, 1)]));
    let o = ReadOptions {
        final_line_complete: true,
        ..options("t")
    };
    let got = read_files(
        &[file("auth.log", text)],
        &[Some(YearChoice::Shared(2025))],
        &o,
    )
    .unwrap();
    assert_eq!(
        got[0].skipped,
        BTreeMap::from([(Skip::IncompleteAttempt, 1)])
    );
}

#[test]
fn ids_keep_file_then_line_order_across_files_split_inside_one_second() {
    let older = file(
        "auth.log.1",
        "Nov 20 23:59:50 h sshd[7]: Failed password for root from 203.0.113.10 port 4000 ssh2\nNov 20 23:59:59 h sshd[7]: Failed password for root from 203.0.113.10 port 4000 ssh2\n",
    );
    let newer = file(
        "auth.log",
        "Nov 20 23:59:59 h sshd[8]: Accepted password for root from 203.0.113.10 port 4001 ssh2\n",
    );
    let choice = [Some(YearChoice::Shared(2025)); 2];
    for namespace in ["t", "bastion", "agency-1", "x", "y", "z"] {
        let o = options(namespace);
        let files = read_files(&[newer.clone(), older.clone()], &choice, &o).unwrap();
        let failure = files[1].events[1].log_id;
        let success = files[0].events[0].log_id;
        assert!(failure < success, "{namespace}: the failure sorts first");
        // The same ids whatever the other files.
        let alone = read_files(std::slice::from_ref(&newer), &choice[..1], &o).unwrap();
        assert_eq!(alone[0].events[0].log_id, success);
    }
}
