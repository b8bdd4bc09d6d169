//! What a panic does in the console: the terminal is given back (raw mode
//! off, the main screen back), then the console's own session is revoked,
//! so that a crash leaves no admin session behind, as quitting does; then
//! the panic is reported as usual. Revoking is bounded by
//! [`REVOKE_WITHIN`]: a server that does not answer never keeps a crashed
//! console from exiting.

use std::time::Duration;

/// How long a panic may spend revoking the console's session.
pub const REVOKE_WITHIN: Duration = Duration::from_secs(2);

/// Installs the hook, ahead of the one in place (which still reports the
/// panic). `revoke` is [`crate::backend::AdminConnection::revoker`]'s:
/// given the bound, it revokes the session or gives up.
pub fn install(revoke: impl Fn(Duration) + Send + Sync + 'static) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        ratatui::restore();
        revoke(REVOKE_WITHIN);
        previous(info);
    }));
}
