//! The Kiln gateway as a library: configuration, the HTTP app, and server start-up, shared by
//! the `kiln` binary (`serve`, `run`, `bench`) and the integration tests.

pub mod bench;
pub mod client;
pub mod config;
pub mod http;
pub mod listen;
pub mod memory;
pub mod results;
pub mod serve;
