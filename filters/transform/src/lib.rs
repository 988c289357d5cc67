//! wasmgate transform: header, query, path and JSON body transformation for requests and
//! responses. [`filter`] holds the filter's hooks; the edits live in [`ops`], [`body`],
//! [`doc`], [`pointer`] and [`template`].

pub mod body;
pub mod config;
pub mod doc;
pub mod filter;
pub mod form;
pub mod ops;
pub mod pointer;
pub mod query;
pub mod template;
pub mod xml;

wasmgate_host::export!(filter::Transform);
