//! Local accounts: user and group names and ids from `/etc/passwd` and `/etc/group`, read
//! through the host (so a snapshot answers them). The probes name socket owners with them and
//! the trust rules check who owns a binary or runs a process.

use std::path::Path;

use crate::host::{Host, HostExt};

/// A user's uid, primary gid and supplementary gids from `/etc/passwd` and `/etc/group`.
pub fn user_ids(host: &dyn Host, name: &str) -> Option<(u32, u32, Vec<u32>)> {
    let passwd = host.read_text(Path::new("/etc/passwd")).ok()?;
    let (uid, gid) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })?;
    let groups = host
        .read_text(Path::new("/etc/group"))
        .map(|t| {
            t.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 4 && f[3].split(',').any(|m| m.trim() == name))
                        .then(|| f[2].parse().ok())?
                })
                .collect()
        })
        .unwrap_or_default();
    Some((uid, gid, groups))
}

/// A uid's or gid's name (`/etc/passwd` or `/etc/group`), else the number.
pub fn id_name(host: &dyn Host, file: &str, id: u32) -> String {
    host.read_text(Path::new(file))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3 && f[2] == id.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

/// A group's gid from `/etc/group`.
pub fn group_id(host: &dyn Host, name: &str) -> Option<u32> {
    let t = host.read_text(Path::new("/etc/group")).ok()?;
    t.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}
