//! The host side of the `types` interface: types only, no functions.

use crate::plugin::bindings::types;
use crate::plugin::state::HostState;

impl types::Host for HostState {}
