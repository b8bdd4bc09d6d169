//! [`LocalPostgres`]: the CPU a PostgreSQL server on this machine spends,
//! so that a figure can say where the cores went. The server is found by
//! the port it listens on (the process owning that listening socket is the
//! postmaster); its CPU is the postmaster's own, that of its live children
//! (one backend per connection, and the background workers), and that of
//! the children it already reaped.

use std::time::Duration;

/// A PostgreSQL server running on this machine.
pub(crate) struct LocalPostgres {
    postmaster: u32,
}

impl LocalPostgres {
    /// The server listening on TCP `port` here, if this process can see it
    /// (reading another user's file descriptors needs root).
    pub(crate) fn on_port(port: u16) -> Option<Self> {
        let inodes = listening_inodes(port);
        let postmaster = pids().find(|pid| {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|link| {
                    let link = link.to_string_lossy();
                    inodes.iter().any(|inode| link == format!("socket:[{inode}]"))
                })
            })
        })?;
        Some(Self { postmaster })
    }

    /// The server named by a libpq URL, when its host is this machine.
    pub(crate) fn of_url(url: &str) -> Option<Self> {
        use tokio_postgres::config::Host;
        let config: tokio_postgres::Config = url.parse().ok()?;
        let local = config.get_hosts().iter().all(|host| match host {
            Host::Tcp(name) => matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1"),
            Host::Unix(_) => true,
        });
        let port = config.get_ports().first().copied().unwrap_or(5432);
        if local { Self::on_port(port) } else { None }
    }

    /// User + system CPU time of the whole server so far.
    pub(crate) fn cpu(&self) -> Option<Duration> {
        let own = stat(self.postmaster)?;
        let children: u64 = pids().filter_map(stat).filter(|s| s.parent == self.postmaster).map(|s| s.own).sum();
        Some(Duration::from_millis((own.own + own.reaped + children) * 10))
    }
}

/// What `/proc/<pid>/stat` says of a process, CPU in clock ticks of 10 ms.
struct Stat {
    parent: u32,
    /// utime + stime.
    own: u64,
    /// cutime + cstime: the children it waited for.
    reaped: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat { parent: fields.get(1)?.parse().ok()?, own: tick(11)? + tick(12)?, reaped: tick(13)? + tick(14)? })
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// The socket inodes listening on `port` (IPv4 and IPv6), from
/// `/proc/net/tcp*`: `sl local_address rem_address st … uid timeout inode`.
fn listening_inodes(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let bound = fields.get(1).and_then(|local| local.rsplit_once(':'));
            let on_port = bound.is_some_and(|(_, hex)| u16::from_str_radix(hex, 16) == Ok(port));
            if on_port && fields.get(3) == Some(&LISTEN) {
                inodes.extend(fields.get(9).map(|inode| inode.to_string()));
            }
        }
    }
    inodes
}
