//! Process probes for `tdsguard bench`: resident memory, CPU time (whole
//! process and per thread group), open file descriptors, RLIMIT_NOFILE and
//! a description of the machine. Linux `/proc` files; elsewhere the probes
//! return `None` and the report leaves the figure out.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use serde::Serialize;

/// Resident set size of this process, `VmRSS` in `/proc/self/status`:
/// every page of the process in RAM (heap, stacks, code, shared libraries),
/// not kernel socket buffers.
pub fn rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Returns freed heap pages to the kernel (glibc `malloc_trim`), so that a
/// following RSS delta is not hidden by memory freed earlier.
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// User plus system CPU time of the whole process (`getrusage(RUSAGE_SELF)`,
/// microsecond resolution), all threads included.
pub fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u64::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(micros)
}

/// CPU time per thread name (`/proc/self/task/*/stat`, fields 14 and 15 in
/// clock ticks, usually 10 ms). The bench names its runtimes' threads, so
/// this splits the process into load generator, proxy and upstream. Threads
/// that already exited are missing, so the bench keeps its pools alive.
pub fn cpu_by_thread_name() -> BTreeMap<String, Duration> {
    let mut groups = BTreeMap::new();
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return groups;
    };
    let tick = clock_tick();
    for task in tasks.flatten() {
        let Some((name, ticks)) = thread_ticks(&task.path().join("stat")) else {
            continue;
        };
        *groups.entry(name).or_insert(Duration::ZERO) += tick * ticks;
    }
    groups
}

/// (comm, utime + stime) of one `/proc/.../stat` file. The name sits in
/// parentheses and may hold spaces, so fields are counted after the last ')'.
fn thread_ticks(path: &std::path::Path) -> Option<(String, u32)> {
    let stat = fs::read_to_string(path).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    // After ')' come field 3 (state) onwards: utime is field 14, stime 15.
    let utime: u64 = rest.nth(11)?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some((name, u32::try_from(utime + stime).ok()?))
}

fn clock_tick() -> Duration {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100);
    Duration::from_nanos(1_000_000_000 / hz)
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> Option<usize> {
    Some(fs::read_dir("/proc/self/fd").ok()?.count())
}

/// RLIMIT_NOFILE before and after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FdLimit {
    pub soft_before: u64,
    pub hard_before: u64,
    pub soft: u64,
    pub hard: u64,
    /// `/proc/sys/fs/nr_open`: the most a hard limit can be raised to.
    pub nr_open: Option<u64>,
}

/// Raises RLIMIT_NOFILE so that `wanted` descriptors fit: the soft limit
/// up to the hard one, and the hard one too (up to `fs.nr_open`) when it is
/// lower than `wanted` and the process may (CAP_SYS_RESOURCE). Falls back
/// to soft = hard when raising the hard limit is refused.
pub fn raise_fd_limit(wanted: u64) -> Option<FdLimit> {
    // SAFETY: an all-zero rlimit is valid; getrlimit only writes it.
    let mut limit: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    let (soft_before, hard_before) = (limit.rlim_cur, limit.rlim_max);
    let nr_open = fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let ceiling = nr_open.unwrap_or(hard_before);
    let target = wanted.min(ceiling).max(hard_before);
    for hard in [target, hard_before] {
        if set_fd_limit(hard, hard) {
            return Some(FdLimit {
                soft_before,
                hard_before,
                soft: hard,
                hard,
                nr_open,
            });
        }
    }
    Some(FdLimit {
        soft_before,
        hard_before,
        soft: soft_before,
        hard: hard_before,
        nr_open,
    })
}

fn set_fd_limit(soft: u64, hard: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid rlimit with soft <= hard.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 }
}

/// The machine a figure was taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel,
        }
    }
}

/// The 1-minute load average (`/proc/loadavg`): other work on the machine
/// competes with the figure taken at the same time.
pub fn load_average() -> Option<f64> {
    let text = fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_cpu_are_read() {
        assert!(rss_bytes().is_some_and(|b| b > 1024 * 1024));
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        assert!(process_cpu() > Duration::ZERO);
        assert!(!cpu_by_thread_name().is_empty());
    }

    #[test]
    fn thread_stat_fields_are_counted_after_the_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stat");
        let line = "42 (tg load) S 1 2 3 4 5 6 7 8 9 10 17 3 0 0 20 0 1 0";
        fs::write(&path, line).expect("write");
        assert_eq!(thread_ticks(&path), Some(("tg load".to_owned(), 20)));
    }

    #[test]
    fn fd_limit_is_raised_to_the_hard_limit() {
        let limit = raise_fd_limit(0).expect("getrlimit");
        assert_eq!(limit.soft, limit.hard);
        assert_eq!(limit.hard, limit.hard_before);
        assert!(limit.soft >= limit.soft_before);
    }
}
