//! Releases of the extension's SQL objects, and the window of them one
//! library serves: its own release and the one before it
//! (`pg_authaudit/src/legacy.rs`).

/// A release's version, `X.Y.Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u32, pub u32, pub u32);

/// The release before this one: the oldest whose SQL this library serves.
pub const PREVIOUS: Release = Release(0, 8, 0);

impl Release {
    /// `X.Y.Z`; `None` for anything else.
    pub fn parse(v: &str) -> Option<Release> {
        let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
        let r = Release(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(r)
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Which SQL objects a database has, for the library.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sql {
    /// [`PREVIOUS`]'s, until `ALTER EXTENSION … UPDATE`.
    Previous,
    /// This release's (or a later one's, which the library cannot know).
    Current,
}

/// What the SQL of release `installed` gets from this library: `None` when
/// it is older than the window (or not a release).
pub fn served(installed: &str) -> Option<Sql> {
    match Release::parse(installed)? {
        r if r == PREVIOUS => Some(Sql::Previous),
        r if r > PREVIOUS => Some(Sql::Current),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_this_release_and_the_one_before() {
        assert_eq!(served("0.8.0"), Some(Sql::Previous));
        assert_eq!(served(env!("CARGO_PKG_VERSION")), Some(Sql::Current));
        for old in [
            "0.1.0", "0.7.0", "0.7.9", "", "0.8", "x.y.z", "0.8.0.1", "0.8.-1",
        ] {
            assert_eq!(served(old), None, "{old}");
        }
    }

    #[test]
    fn the_previous_release_is_the_one_before_this() {
        let this = Release::parse(env!("CARGO_PKG_VERSION")).unwrap();
        assert!(PREVIOUS < this);
        assert_eq!((PREVIOUS.0, PREVIOUS.1 + 1), (this.0, this.1));
    }
}
