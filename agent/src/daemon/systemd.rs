//! systemd integration: `READY=1` after the first full pass, `WATCHDOG=1` from the work loop
//! (rate-limited to half the watchdog interval), `STATUS=` lines, `RELOADING=1` / `STOPPING=1`.
//! Everything is a no-op when the daemon does not run under systemd (`NOTIFY_SOCKET` unset).

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The service manager connection (or none).
#[derive(Debug)]
pub struct Systemd {
    enabled: bool,
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` from the environment.
    pub fn from_env() -> Systemd {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some();
        let mut usec = 0u64;
        let watchdog = (enabled && sd_notify::watchdog_enabled(false, &mut usec))
            .then(|| Duration::from_micros(usec));
        Systemd {
            enabled,
            watchdog,
            last_ping: None,
        }
    }

    /// Under systemd (`Type=notify`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The watchdog interval systemd expects pings within, if enabled.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState]) {
        if self.enabled {
            let _ = sd_notify::notify(false, states);
        }
    }

    /// Startup is done.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// Pings the watchdog; call it from the real work loop, as often as wanted.
    pub fn watchdog(&mut self) {
        let Some(interval) = self.watchdog else {
            return;
        };
        if self
            .last_ping
            .is_some_and(|last| last.elapsed() < interval / 4)
        {
            return;
        }
        self.last_ping = Some(Instant::now());
        self.send(&[NotifyState::Watchdog]);
    }

    /// A reload starts (systemd 253+ wants the monotonic time with it); call [`Systemd::ready`]
    /// when it is done.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
