//! Server CPU time and memory from /proc (Linux), for the processes given by `--server-pid`.

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// utime + stime of all the processes, in seconds.
    pub cpu_s: f64,
    /// Resident set size of all the processes, in KiB.
    pub rss_kb: u64,
}

/// Samples the given processes; `None` without PIDs or when /proc cannot be read.
pub fn sample(pids: &[u32]) -> Option<Sample> {
    if pids.is_empty() {
        return None;
    }
    let ticks = clock_ticks();
    let mut cpu_s = 0.0;
    let mut rss_kb = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        cpu_s += parse_cpu_ticks(&stat)? as f64 / ticks;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        rss_kb += parse_rss_kb(&status)?;
    }
    Some(Sample { cpu_s, rss_kb })
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture we run on.
    100.0
}

/// utime + stime (fields 14 and 15) from /proc/PID/stat; the command name (field 2) may
/// contain spaces, so fields are counted after its closing parenthesis.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field n is fields[n - 3].
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

pub fn parse_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        let stat =
            "1234 (scalify serve) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let status = "Name:\tscalify\nVmPeak:\t  100 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_rss_kb(status), Some(20480));
    }

    #[test]
    fn samples_this_process() {
        let s = sample(&[std::process::id()]).unwrap();
        assert!(s.rss_kb > 0);
        assert!(sample(&[]).is_none());
    }
}
