//! CPU time and memory of processes on this host, from `/proc` (Linux only; elsewhere every
//! function answers `None`), and finding the process that listens on a TCP port.

use std::path::Path;
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times. `sysconf(_SC_CLK_TCK)` is 100 on
/// every Linux architecture this runs on; reading it would need libc for one constant.
const CLK_TCK: f64 = 100.0;

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User + system CPU time so far.
    pub cpu: Duration,
    /// Resident set size now, in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`) so far, in bytes.
    pub hwm_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status` (`pid` `None` = this process).
#[must_use]
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    Some(ProcSample {
        cpu: cpu_time(&stat)?,
        rss_bytes: status_kb(&status, "VmRSS:")? * 1024,
        hwm_bytes: status_kb(&status, "VmHWM:")? * 1024,
    })
}

/// utime + stime (fields 14 and 15) of a `stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn cpu_time(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_secs_f64((utime + stime) as f64 / CLK_TCK))
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The pid of the process with a socket listening on TCP `port` (any local address), found by
/// the socket's inode in `/proc/net/tcp{,6}` and then among `/proc/*/fd`. `None` when no
/// process of this host listens there (or `/proc` cannot be read: another user's process).
#[must_use]
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if holds_any(&entry.path().join("fd"), &wanted) {
            return Some(pid);
        }
    }
    None
}

fn holds_any(fd_dir: &Path, wanted: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(fd_dir) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .ok()
            .and_then(|target| target.to_str().map(|t| wanted.iter().any(|w| w == t)))
            .unwrap_or(false)
    })
}

/// Inodes of the sockets in a `/proc/net/tcp` table in state LISTEN (0A) on `port`.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            (local_port == port && *state == "0A" && *inode != "0").then(|| (*inode).to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let stat = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0";
        assert_eq!(cpu_time(stat), Some(Duration::from_secs(4)));
    }

    #[test]
    fn finds_the_listening_socket_of_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0\n\
   1: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0\n";
        assert_eq!(listening_inodes(table, 8080), vec!["4242".to_owned()]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_its_own_listener_and_reads_itself() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        let me = sample(None).ok_or_else(|| std::io::Error::other("no /proc/self"))?;
        assert!(me.rss_bytes > 0 && me.hwm_bytes >= me.rss_bytes);
        Ok(())
    }
}
