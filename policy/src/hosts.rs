//! Connection slots: libpq's `pqConnectOptions2` pairing of `host` and `hostaddr` lists, and
//! whether each slot is a Unix socket, loopback TCP or network TCP.
//!
//! Values may carry opaque spans (see [`crate::env`]): [`HIDDEN`] stands for text the engine
//! cannot see, [`NON_LOOPBACK_IP`] for an IP address that is known not to be loopback (a
//! Service's cluster IP, `status.podIP`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Stands for a span whose text is hidden (an unresolved Secret or ConfigMap value).
pub(crate) const HIDDEN: char = '\u{E000}';
/// Stands for an IP address of unknown value that is known not to be loopback.
pub(crate) const NON_LOOPBACK_IP: char = '\u{E001}';
/// A whole value that is hidden.
pub(crate) const HIDDEN_STR: &str = "\u{E000}";
/// A whole value that is a non-loopback IP of unknown value.
pub(crate) const NON_LOOPBACK_IP_STR: &str = "\u{E001}";

/// Whether `s` contains a span the engine cannot see.
pub(crate) fn has_hidden(s: &str) -> bool {
    s.contains(HIDDEN)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loopback {
    Yes,
    No,
    /// A hidden span decides.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A Unix-domain socket: no TLS applies.
    Socket,
    Tcp {
        loopback: Loopback,
    },
    /// A hidden value decides even whether this is a socket.
    Unknown,
}

/// libpq refuses a `hostaddr` list whose length differs from a non-empty `host` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{hosts} host names cannot be matched to {addrs} hostaddr values")]
pub(crate) struct SlotMismatch {
    pub hosts: usize,
    pub addrs: usize,
}

/// The connection slots libpq would try, from the effective `host` and `hostaddr`.
pub(crate) fn slots<'s>(
    host: Option<&'s str>,
    hostaddr: Option<&'s str>,
) -> Result<Slots<'s>, SlotMismatch> {
    let host = host.filter(|h| !h.is_empty());
    let addr = hostaddr.filter(|a| !a.is_empty());
    let count = |s: &str| s.bytes().filter(|&c| c == b',').count() + 1;
    let remaining = match (host, addr) {
        (Some(h), Some(a)) if count(h) != count(a) => {
            return Err(SlotMismatch {
                hosts: count(h),
                addrs: count(a),
            });
        }
        (_, Some(a)) => count(a),
        (Some(h), None) => count(h),
        (None, None) => 1,
    };
    Ok(Slots {
        hosts: host.map(|h| h.split(',')),
        addrs: addr.map(|a| a.split(',')),
        remaining,
    })
}

/// The slots of [`slots`], in order, without allocating.
#[derive(Debug, Clone)]
pub(crate) struct Slots<'s> {
    hosts: Option<std::str::Split<'s, char>>,
    addrs: Option<std::str::Split<'s, char>>,
    remaining: usize,
}

impl Iterator for Slots<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let h = self.hosts.as_mut().and_then(Iterator::next).unwrap_or("");
        let a = self.addrs.as_mut().and_then(Iterator::next).unwrap_or("");
        Some(if !a.is_empty() {
            Slot::Tcp {
                loopback: loopback(a),
            }
        } else {
            classify_host(h)
        })
    }
}

/// One `host` element: empty is the default socket directory, `/…` or `@…` a socket.
pub(crate) fn classify_host(h: &str) -> Slot {
    match h.chars().next() {
        None | Some('/') | Some('@') => Slot::Socket,
        Some(HIDDEN) => Slot::Unknown,
        Some(_) => Slot::Tcp {
            loopback: loopback(h),
        },
    }
}

/// Whether a TCP host or address is loopback: `localhost` exactly, or an IP literal in
/// `127.0.0.0/8`, `::1` or `::ffff:127.0.0.0/104`.
pub(crate) fn loopback(h: &str) -> Loopback {
    if h == NON_LOOPBACK_IP_STR {
        return Loopback::No;
    }
    if h.contains(HIDDEN) || h.contains(NON_LOOPBACK_IP) {
        return Loopback::Unknown;
    }
    if is_loopback_literal(h) {
        Loopback::Yes
    } else {
        Loopback::No
    }
}

pub(crate) fn is_loopback_literal(h: &str) -> bool {
    if h == "localhost" {
        return true;
    }
    let bare = h
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(h);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => v4.is_loopback(),
        Ok(IpAddr::V6(v6)) => {
            v6 == Ipv6Addr::LOCALHOST
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4: Ipv4Addr| v4.is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO: Slot = Slot::Tcp {
        loopback: Loopback::No,
    };
    const YES: Slot = Slot::Tcp {
        loopback: Loopback::Yes,
    };

    #[test]
    fn slot_table() {
        let hidden = HIDDEN.to_string();
        let ip = NON_LOOPBACK_IP.to_string();
        let partial = format!("db-{HIDDEN}");
        let cases: &[(Option<&str>, Option<&str>, Vec<Slot>)] = &[
            (None, None, vec![Slot::Socket]),
            (Some(""), None, vec![Slot::Socket]),
            (Some("db"), None, vec![NO]),
            (Some("/var/run/postgresql"), None, vec![Slot::Socket]),
            (Some("@abstract"), None, vec![Slot::Socket]),
            (Some("localhost"), None, vec![YES]),
            (Some("LOCALHOST"), None, vec![NO]),
            (Some("127.8.9.1"), None, vec![YES]),
            (Some("::1"), None, vec![YES]),
            (Some("::ffff:127.0.0.1"), None, vec![YES]),
            (Some("::ffff:10.0.0.1"), None, vec![NO]),
            (Some("128.0.0.1"), None, vec![NO]),
            (Some("a,,/tmp"), None, vec![NO, Slot::Socket, Slot::Socket]),
            // hostaddr decides the network address of its slot.
            (Some("db.example.com"), Some("127.0.0.1"), vec![YES]),
            (Some("localhost,b"), Some(",10.1.1.1"), vec![YES, NO]),
            (None, Some("10.1.1.1"), vec![NO]),
            (Some(&hidden), None, vec![Slot::Unknown]),
            (
                Some(&partial),
                None,
                vec![Slot::Tcp {
                    loopback: Loopback::Unknown,
                }],
            ),
            (Some(&ip), None, vec![NO]),
        ];
        for (h, a, want) in cases {
            let got: Vec<Slot> = slots(*h, *a).expect("matches").collect();
            assert_eq!(&got, want, "{h:?} {a:?}");
        }
        assert_eq!(
            slots(Some("a,b"), Some("10.0.0.1")).err(),
            Some(SlotMismatch { hosts: 2, addrs: 1 })
        );
    }
}
