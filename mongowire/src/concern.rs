//! Write concerns, checked as a single-node replica set checks them: a
//! malformed concern refuses the command before anything is written; one
//! the set cannot satisfy (more than one node, an unknown tag) is applied
//! and answered with a `writeConcernError`, as MongoDB answers it.

use crate::store::{codes, CommandError};
use bson::{doc, Bson, Document};

/// The write concern error for a command's `writeConcern`, or the command
/// error that refuses it (None: satisfied).
pub fn check(body: &Document) -> Result<Option<Document>, CommandError> {
    let Some(wc) = body.get("writeConcern") else {
        return Ok(None);
    };
    let Bson::Document(wc) = wc else {
        return Err(type_mismatch("writeConcern must be an object"));
    };
    if let Some(j) = wc.get("j") {
        if !matches!(j, Bson::Boolean(_)) {
            return Err(type_mismatch("'j' must be a boolean"));
        }
    }
    if let Some(t) = wc.get("wtimeout") {
        if !matches!(t, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_)) {
            return Err(type_mismatch("'wtimeout' must be a number"));
        }
    }
    let w = match wc.get("w") {
        None => return Ok(None),
        Some(Bson::Int32(n)) => Some(i64::from(*n)),
        Some(Bson::Int64(n)) => Some(*n),
        Some(Bson::Double(n)) if n.fract() == 0.0 => Some(*n as i64),
        Some(Bson::String(tag)) if tag == "majority" => return Ok(None),
        Some(Bson::String(tag)) => {
            return Ok(Some(doc! {
                "code": 79, "codeName": "UnknownReplWriteConcern",
                "errmsg": format!("No write concern mode named '{tag}' found in replica set configuration"),
            }))
        }
        Some(_) => None,
    };
    match w {
        Some(n) if n < 0 => Err(CommandError::new(
            codes::FAILED_TO_PARSE,
            "FailedToParse",
            "w has to be a non-negative number",
        )),
        Some(n) if n <= 1 => Ok(None),
        Some(_) => Ok(Some(doc! {
            "code": 100, "codeName": "UnsatisfiableWriteConcern",
            "errmsg": "Not enough data-bearing nodes",
        })),
        None => Err(CommandError::new(
            codes::FAILED_TO_PARSE,
            "FailedToParse",
            "w has to be a number, a string or an object",
        )),
    }
}

fn type_mismatch(message: &str) -> CommandError {
    CommandError::new(14, "TypeMismatch", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(wc: Document) -> Result<Option<i32>, i32> {
        check(&doc! {"insert": "c", "writeConcern": wc})
            .map(|e| e.map(|d| d.get_i32("code").unwrap()))
            .map_err(|e| e.code)
    }

    #[test]
    fn concerns_are_checked_as_a_single_node_replica_set_does() {
        assert_eq!(code_of(doc! {"w": 1}), Ok(None));
        assert_eq!(code_of(doc! {"w": 0}), Ok(None));
        assert_eq!(
            code_of(doc! {"w": "majority", "j": true, "wtimeout": 100}),
            Ok(None)
        );
        assert_eq!(code_of(doc! {"w": 2}), Ok(Some(100)));
        assert_eq!(code_of(doc! {"w": "east-coast"}), Ok(Some(79)));
        assert_eq!(code_of(doc! {"j": "yes"}), Err(14));
        assert_eq!(code_of(doc! {"w": -1}), Err(9));
        assert_eq!(code_of(doc! {"w": true}), Err(9));
        assert_eq!(check(&doc! {"insert": "c"}).unwrap(), None);
    }
}
