//! The deployment's channels: `authaudit.extra_channels` beside the
//! built-in ones (`authaudit_core::channel`). A malformed list is refused
//! where it is set (`SET`, `ALTER SYSTEM`, a configuration reload), so the
//! recording functions only ever see a valid one; they read it parsed once
//! per value.

use crate::gucs::EXTRA_CHANNELS;
use authaudit_core::channel::{Channel, ChannelSet};
use pgrx::prelude::*;
use std::cell::RefCell;
use std::ffi::CString;

thread_local! {
    /// The last value read and its parsed set.
    static CACHE: RefCell<(Option<CString>, ChannelSet)> = RefCell::new((None, ChannelSet::default()));
}

/// The configured channels (none when the parameter is empty).
pub fn configured() -> ChannelSet {
    let value = EXTRA_CHANNELS.get();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != value {
            let list = value.as_deref().and_then(|v| v.to_str().ok()).unwrap_or("");
            c.1 = ChannelSet::parse(list).unwrap_or_default();
            c.0 = value;
        }
        c.1.clone()
    })
}

/// Every channel a writer may record and the extension's own: the built-in
/// ones, then the configured ones in list order.
#[pg_extern(stable, parallel_safe, name = "channels")]
fn channels() -> TableIterator<
    'static,
    (
        name!(channel, String),
        name!(built_in, bool),
        name!(writable, bool),
    ),
> {
    let built_in = Channel::BUILT_IN
        .into_iter()
        .map(|c| (c.as_str().to_owned(), true, c != Channel::SYSTEM));
    let configured: Vec<_> = configured()
        .channels()
        .iter()
        .map(|c| (c.as_str().to_owned(), false, true))
        .collect();
    TableIterator::new(built_in.chain(configured).collect::<Vec<_>>())
}
