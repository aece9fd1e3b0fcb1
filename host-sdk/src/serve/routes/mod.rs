//! The route handlers, by resource (the router that mounts them is [`super::router`]).

pub(crate) mod files;
pub(crate) mod frontend;
pub(crate) mod info;
pub(crate) mod jobs;
pub(crate) mod prompt;
pub(crate) mod site;
pub(crate) mod templates;
pub(crate) mod ws;
