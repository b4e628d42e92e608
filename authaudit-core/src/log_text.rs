//! What of a server log message may be written, when it might carry a
//! session token: the rules behind the extension's log hook
//! (`pg_authaudit/src/log_redaction.rs`, docs/security.md, "Tokens stay out
//! of the server log").
//!
//! PostgreSQL writes statement text into the log in several places: the
//! `STATEMENT:` line of a failing statement, the message itself for
//! `log_statement` (`statement: …`, `execute <name>: …`),
//! `log_min_duration_statement` (`duration: … ms  statement: …`) and
//! `auto_explain` (`duration: … ms  plan: Query Text: …`), and bound values
//! in a `parameters: $1 = '…'` detail. A message is redacted when its text
//! holds something shaped like a compact JWS or calls `record_token_issued`
//! (whose token argument need not be well formed).

use crate::jwt::{compact_jws_spans, contains_compact_jws};

/// What replaces the statement of a message that must not be written.
pub const HIDDEN: &str =
    "statement hidden by pg_authaudit: it carries a session token or calls record_token_issued";

/// Whether `text` must stay out of the log: it holds something shaped like
/// a compact JWS, or calls `record_token_issued`.
pub fn must_hide(text: &str) -> bool {
    contains_compact_jws(text) || text.to_ascii_lowercase().contains("record_token_issued")
}

/// What replaces a token inside any other message.
pub const TOKEN: &str = "<token hidden by pg_authaudit>";

/// The prefixes of PostgreSQL's messages that log a statement's text.
const STATEMENT_LOGGING: [&str; 5] = ["statement: ", "execute ", "duration: ", "parse ", "bind "];

/// The message to write instead of `message` (`None`: write it as it is).
/// A message that logs a statement and must be hidden keeps its
/// `duration: … ms` prefix, so timings stay in the log; everything after it
/// is replaced. In any other message, each token is replaced.
pub fn message(message: &str) -> Option<String> {
    if STATEMENT_LOGGING.iter().any(|p| message.starts_with(p)) {
        if !must_hide(message) {
            return None;
        }
        if let Some(rest) = message.strip_prefix("duration: ") {
            if let Some(ms) = rest.find(" ms") {
                return Some(format!("duration: {} ms  {HIDDEN}", &rest[..ms]));
            }
        }
        return Some(HIDDEN.to_owned());
    }
    let spans = compact_jws_spans(message);
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(message.len());
    let mut at = 0;
    for (start, end) in spans {
        out.push_str(&message[at..start]);
        out.push_str(TOKEN);
        at = end;
    }
    out.push_str(&message[at..]);
    Some(out)
}

/// Whether a detail, context or internal query must be dropped: it holds a
/// token, or it lists bound parameters of a message whose statement was
/// hidden (`parameters: $1 = …` in a detail, `unnamed portal with
/// parameters: $1 = …` in an error's context).
pub fn drop_part(part: &str, statement_hidden: bool) -> bool {
    contains_compact_jws(part) || (statement_hidden && part.contains("parameters: $"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";

    #[test]
    fn statement_logging_keeps_its_timing_and_loses_the_statement() {
        let logged = format!("duration: 0.512 ms  statement: SELECT '{TOKEN}'");
        assert_eq!(
            message(&logged).unwrap(),
            format!("duration: 0.512 ms  {HIDDEN}")
        );
        let plan = format!("duration: 1.000 ms  plan:\nQuery Text: SELECT '{TOKEN}'\nResult");
        assert_eq!(
            message(&plan).unwrap(),
            format!("duration: 1.000 ms  {HIDDEN}")
        );
        assert_eq!(
            message("statement: SELECT authaudit.RECORD_TOKEN_ISSUED($1, $2)").unwrap(),
            HIDDEN
        );
        assert_eq!(message("statement: SELECT 1"), None);
    }

    #[test]
    fn other_messages_lose_their_tokens_only() {
        assert_eq!(
            message(&format!("invalid input syntax for type uuid: \"{TOKEN}\"")).unwrap(),
            format!("invalid input syntax for type uuid: \"{}\"", super::TOKEN)
        );
        assert_eq!(
            message("function authaudit.record_token_issued(integer) does not exist"),
            None,
            "an error naming the function keeps its message"
        );
    }

    #[test]
    fn parameters_go_with_a_hidden_statement_and_tokens_anywhere() {
        assert!(drop_part("parameters: $1 = 'not-even-a-token'", true));
        assert!(!drop_part("parameters: $1 = 'x'", false));
        assert!(drop_part(
            "PL/pgSQL function f() line 3 at RAISE\nunnamed portal with parameters: $1 = 'x'",
            true
        ));
        assert!(drop_part(&format!("parameters: $1 = '{TOKEN}'"), false));
        assert!(drop_part(
            &format!("PL/pgSQL function f() line 3 at '{TOKEN}'"),
            false
        ));
        assert!(!drop_part(
            "PL/pgSQL function authaudit.record_token_issued() line 3",
            true
        ));
    }
}
