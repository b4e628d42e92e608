//! MongoDB wire protocol framing: the message header and OP_MSG
//! ("OP_MSG" in the MongoDB Wire Protocol reference), the only opcode the
//! official drivers use with servers of version 3.6 and later.

use bson::{Bson, Document};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const OP_MSG: i32 = 2013;
/// Largest message accepted (MongoDB's `maxMessageSizeBytes`).
pub const MAX_MESSAGE_BYTES: usize = 48_000_000;

const CHECKSUM_PRESENT: u32 = 1;
pub const MORE_TO_COME: u32 = 1 << 1;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported opcode {0}")]
    Opcode(i32),
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("bad BSON: {0}")]
    Bson(#[from] bson::raw::Error),
}

/// A request: its id, flags and the command document, with document
/// sequences (section kind 1) folded into the body under their identifiers.
#[derive(Debug)]
pub struct Request {
    pub request_id: i32,
    pub flags: u32,
    pub body: Document,
}

/// Reads one OP_MSG; `Ok(None)` when the peer closed the connection.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Request>, WireError> {
    let mut header = [0u8; 16];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let int =
        |i: usize| i32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (len, request_id, opcode) = (int(0), int(4), int(12));
    let len = usize::try_from(len).map_err(|_| WireError::Malformed("negative length"))?;
    if !(21..=MAX_MESSAGE_BYTES).contains(&len) {
        return Err(WireError::Malformed("message length out of range"));
    }
    let mut payload = vec![0u8; len - 16];
    r.read_exact(&mut payload).await?;
    if opcode != OP_MSG {
        return Err(WireError::Opcode(opcode));
    }
    let flags = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let mut rest = &payload[4..];
    if flags & CHECKSUM_PRESENT != 0 {
        rest = &rest[..rest.len().saturating_sub(4)];
    }
    let mut body: Option<Document> = None;
    let mut sequences: Vec<(String, Vec<Bson>)> = Vec::new();
    while !rest.is_empty() {
        let kind = rest[0];
        rest = &rest[1..];
        match kind {
            0 => {
                let (doc, used) = one_document(rest)?;
                body = Some(doc);
                rest = &rest[used..];
            }
            1 => {
                if rest.len() < 4 {
                    return Err(WireError::Malformed("short document sequence"));
                }
                let size = i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let size = usize::try_from(size).map_err(|_| WireError::Malformed("size"))?;
                if size < 4 || size > rest.len() {
                    return Err(WireError::Malformed("document sequence size"));
                }
                let mut section = &rest[4..size];
                let end = section
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(WireError::Malformed("identifier"))?;
                let id = String::from_utf8(section[..end].to_vec())
                    .map_err(|_| WireError::Malformed("identifier"))?;
                section = &section[end + 1..];
                let mut docs = Vec::new();
                while !section.is_empty() {
                    let (doc, used) = one_document(section)?;
                    docs.push(Bson::Document(doc));
                    section = &section[used..];
                }
                sequences.push((id, docs));
                rest = &rest[size..];
            }
            _ => return Err(WireError::Malformed("unknown section kind")),
        }
    }
    let mut body = body.ok_or(WireError::Malformed("no body section"))?;
    for (id, docs) in sequences {
        body.insert(id, Bson::Array(docs));
    }
    Ok(Some(Request {
        request_id,
        flags,
        body,
    }))
}

fn one_document(buf: &[u8]) -> Result<(Document, usize), WireError> {
    if buf.len() < 5 {
        return Err(WireError::Malformed("short document"));
    }
    let size = i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = usize::try_from(size).map_err(|_| WireError::Malformed("document size"))?;
    if size < 5 || size > buf.len() {
        return Err(WireError::Malformed("document size"));
    }
    // Element by element, as stored: no key is read as extended JSON (a
    // `{"$date": …}` sub-document stays a sub-document with all its keys).
    let raw = bson::RawDocument::from_bytes(&buf[..size])?;
    let doc = Document::try_from(raw)?;
    Ok((doc, size))
}

/// Writes a reply (OP_MSG, one body section) to request `response_to`.
pub async fn write_reply<W: AsyncWrite + Unpin>(
    w: &mut W,
    request_id: i32,
    response_to: i32,
    body: &bson::RawDocument,
) -> std::io::Result<()> {
    let doc = body.as_bytes();
    let len = 16 + 4 + 1 + doc.len();
    let mut out = Vec::with_capacity(len);
    out.extend((len as i32).to_le_bytes());
    out.extend(request_id.to_le_bytes());
    out.extend(response_to.to_le_bytes());
    out.extend(OP_MSG.to_le_bytes());
    out.extend(0u32.to_le_bytes());
    out.push(0);
    out.extend(doc);
    w.write_all(&out).await?;
    w.flush().await
}
