//! Small parsers for the kernel's network tables that `procfs-core` does not cover, over bytes the
//! host returned: `/proc/net/tcp{,6}` (LISTEN sockets with their inodes), `/proc/net/netstat`
//! and `/proc/net/snmp` (`TcpExt: ListenOverflows ListenDrops`, ...), `/proc/vmstat`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSocket {
    /// The local address as text (`0.0.0.0`, `::`, `127.0.0.1`).
    pub addr: String,
    pub port: u16,
    pub inode: u64,
}

/// LISTEN (state `0A`) sockets from `/proc/net/tcp` or `/proc/net/tcp6`. Bad lines are skipped.
pub fn parse_tcp_listen(text: &str) -> Vec<ListenSocket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != "0A" {
            continue;
        }
        let Some((addr_hex, port_hex)) = fields[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let Some(addr) = decode_addr(addr_hex) else {
            continue;
        };
        let inode = fields[9].parse().unwrap_or(0);
        out.push(ListenSocket { addr, port, inode });
    }
    out
}

/// The kernel prints addresses as host-order 32-bit words in hex.
fn decode_addr(hex: &str) -> Option<String> {
    match hex.len() {
        8 => {
            let n = u32::from_str_radix(hex, 16).ok()?;
            Some(Ipv4Addr::from(n.swap_bytes()).to_string())
        }
        32 => {
            let mut bytes = [0u8; 16];
            for word in 0..4 {
                let w = u32::from_str_radix(hex.get(word * 8..word * 8 + 8)?, 16).ok()?;
                bytes[word * 4..word * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => v6.to_string(),
            })
        }
        _ => None,
    }
}

/// `Prefix: name name ...` / `Prefix: value value ...` pairs (`/proc/net/netstat`,
/// `/proc/net/snmp`) as `Prefix.name → value`.
pub fn parse_netstat(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((p1, names)), Some((p2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if p1 != p2 {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse::<u64>() {
                out.insert(format!("{p1}.{name}"), v);
            }
        }
    }
    out
}

/// `name value` lines (`/proc/vmstat`, cgroup `memory.events`, `cpu.stat`, `pids.events`).
pub fn parse_flat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next()?;
            let value = it.next()?.parse().ok()?;
            Some((name.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 22222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000    33        0 0 1
   garbage
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1
   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 778 1
";

    #[test]
    fn listen_sockets_v4_and_v6() {
        let v4 = parse_tcp_listen(TCP);
        assert_eq!(v4.len(), 2);
        assert_eq!(
            v4[0],
            ListenSocket {
                addr: "0.0.0.0".into(),
                port: 80,
                inode: 12345
            }
        );
        assert_eq!(v4[1].addr, "127.0.0.1");
        assert_eq!(v4[1].port, 8080);
        let v6 = parse_tcp_listen(TCP6);
        assert_eq!(v6[0].addr, "::");
        assert_eq!(v6[0].port, 443);
        assert_eq!(v6[1].addr, "::1");
    }

    #[test]
    fn netstat_pairs_and_flat_counters() {
        let text = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 17 19\nIpExt: InNoRoutes\nIpExt: 3\ntruncated";
        let m = parse_netstat(text);
        assert_eq!(m["TcpExt.ListenOverflows"], 17);
        assert_eq!(m["TcpExt.ListenDrops"], 19);
        assert_eq!(m["IpExt.InNoRoutes"], 3);
        let f = parse_flat("pswpin 10\npswpout 20\nbad\nx y\n");
        assert_eq!(f.len(), 2);
        assert_eq!(f["pswpout"], 20);
    }
}
