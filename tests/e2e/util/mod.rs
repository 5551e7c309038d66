//! The toolkit of the lab tests (how to write one: `tests/e2e/README.md`):
//! - [`cmd`]: run a command with a deadline; on failure the panic shows its stdout and stderr;
//!   `require!(tools…)` skips a test that needs root and tools it lacks.
//! - [`netns`]: network namespaces with veth pairs, addresses and routes, deleted on drop, and
//!   the agent's host run inside one.
//! - [`services`]: nginx, fail2ban and any child process, each in a temp dir and stopped on drop;
//!   the full web stack lab is [`lab`].
//! - [`lab`]: nginx + PHP-FPM + MariaDB (+ Apache) from temp dirs on loopback, the lab lock
//!   ([`lab::exclusive`]) that serializes every test starting processes discovery could see.
//! - [`debian_root`]: debootstrapped Debian roots for software this machine must not install.

pub mod cmd;
pub mod debian_root;
pub mod lab;
pub mod netns;
pub mod services;

/// The value, or `None` after [`crate::skip`] with the reason (a namespace that could not be made,
/// a Debian root that cannot be built here): `let Some(x) = or_skip(make()) else { return };`.
pub fn or_skip<T>(result: Result<T, String>) -> Option<T> {
    result.map_err(crate::skip).ok()
}
