//! A log file's bytes: plain, or gzip (rotations such as `auth.log.2.gz`,
//! recognised by their magic bytes, several members read in turn). Other
//! compressed forms are refused by name rather than read as text.

use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file read whole.
#[derive(Debug, Clone)]
pub struct Input {
    /// The path as given, for messages.
    pub name: String,
    pub bytes: Vec<u8>,
    /// The file's modification time (Unix seconds).
    pub modified: Option<i64>,
    pub gzip: bool,
}

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: damaged gzip data ({source}); nothing of it was read")]
    Gzip {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{file}: compressed with {format}, which the importer does not read: decompress it first"
    )]
    Compressed { file: PathBuf, format: &'static str },
}

impl Input {
    /// Reads `path`, decompressing gzip.
    pub fn read(path: &Path) -> Result<Input, ReadError> {
        let io = |source| ReadError::Io {
            file: path.to_owned(),
            source,
        };
        let raw = std::fs::read(path).map_err(io)?;
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64);
        Input::from_bytes(path, raw, modified)
    }

    /// A file of `raw` bytes (gzip or not) named `path`.
    pub fn from_bytes(
        path: &Path,
        raw: Vec<u8>,
        modified: Option<i64>,
    ) -> Result<Input, ReadError> {
        for (magic, format) in [
            (&b"BZh"[..], "bzip2"),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
            (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        ] {
            if raw.starts_with(magic) {
                return Err(ReadError::Compressed {
                    file: path.to_owned(),
                    format,
                });
            }
        }
        let name = path.display().to_string();
        if raw.starts_with(&[0x1f, 0x8b]) {
            let mut bytes = Vec::with_capacity(raw.len() * 8);
            MultiGzDecoder::new(raw.as_slice())
                .read_to_end(&mut bytes)
                .map_err(|source| ReadError::Gzip {
                    file: path.to_owned(),
                    source,
                })?;
            return Ok(Input {
                name,
                bytes,
                modified,
                gzip: true,
            });
        }
        Ok(Input {
            name,
            bytes: raw,
            modified,
            gzip: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(text: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_is_read_and_damaged_gzip_refused() {
        let text = b"Nov 20 03:14:07 h sshd[1]: x\n";
        let mut two = gz(text);
        two.extend(gz(text));
        let i = Input::from_bytes(Path::new("a.gz"), two, None).unwrap();
        assert!(i.gzip);
        assert_eq!(i.bytes, [&text[..], &text[..]].concat(), "both members");
        let mut cut = gz(text);
        cut.truncate(cut.len() - 6);
        let e = Input::from_bytes(Path::new("a.gz"), cut, None).unwrap_err();
        assert!(e.to_string().starts_with("a.gz: damaged gzip data"), "{e}");
        let e = Input::from_bytes(
            Path::new("a.xz"),
            vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1],
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("compressed with xz"), "{e}");
        let plain = Input::from_bytes(Path::new("a"), text.to_vec(), Some(5)).unwrap();
        assert!(!plain.gzip);
        assert_eq!(plain.modified, Some(5));
    }
}
