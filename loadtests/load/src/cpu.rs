//! CPU time of a process from `/proc/PID/stat` (Linux): user + system time,
//! to charge a target's process with CPU per request (the method of
//! `docs/performance.md`).

/// Clock ticks per second of `/proc` times. `USER_HZ` is 100 on every
/// Linux architecture Vigil builds for; the kernel converts to it whatever
/// its internal tick rate.
const TICKS_PER_SECOND: u64 = 100;

/// User + system CPU time of `pid` so far, in microseconds; `None` when the
/// process is gone or the file does not read as expected.
pub fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// The CPU time of all of `pids` so far, summed, in microseconds; `None`
/// when there are none or one of them cannot be read.
pub fn cpu_micros_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .try_fold(0u64, |sum, &p| Some(sum.saturating_add(cpu_micros(p)?)))
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in µs. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')' come field 3 (state) onwards: utime is the 12th of them.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime).saturating_mul(1_000_000 / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_read_after_the_command_name() {
        let line =
            "4242 (nginx: worker (x)) S 1 4242 4242 0 -1 4194624 1 0 0 0 150 25 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(line), Some(175 * 10_000));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn our_own_process_has_a_cpu_time() {
        let me = std::process::id();
        assert!(cpu_micros(me).is_some());
        assert!(cpu_micros_of(&[me, me]).is_some());
        assert_eq!(cpu_micros_of(&[]), None);
    }
}
