//! `sigil-console`: the live terminal admin console of Sigil.
//!
//! The console is an event loop over [`action::Action`]s: keys (through
//! the one key map, [`keymap`]), ticks, resizes and updates from the
//! background gRPC worker ([`backend`], spoken to only through
//! [`messages`]) go into [`app::App`], a plain state machine that can be
//! tested without a terminal; [`ui`] draws the state and nothing else (it
//! takes the state read-only, and no network work ever runs while
//! drawing). Destructive actions go through a confirm step. A panic gives
//! the terminal back and revokes the console's session ([`panic_hook`]).

pub mod action;
pub mod app;
pub mod backend;
pub mod dashboard;
mod dashboard_ui;
#[cfg(test)]
mod fixtures;
pub mod form;
pub mod format;
pub mod hidden;
pub mod keymap;
pub mod layout;
pub mod messages;
pub mod mode;
pub mod panic_hook;
pub mod records;
mod refetch;
pub mod table;
pub mod ui;
