//! The worker threads of a running sluice, seen through /proc.

use super::Sluice;

/// The /proc status of each worker thread, by thread id: the main thread
/// (the first worker) and the `sluice-worker-N` threads.
pub fn worker_statuses(s: &Sluice) -> Vec<String> {
    let pid = s.pid();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let dir = t.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let worker = comm.trim_end() == "sluice" || comm.starts_with("sluice-worker-");
        let tid: u64 = t.file_name().to_string_lossy().parse().unwrap_or(0);
        if let (true, Ok(status)) = (worker, std::fs::read_to_string(dir.join("status"))) {
            out.push((tid, status));
        }
    }
    out.sort();
    out.into_iter().map(|(_, s)| s).collect()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

/// Voluntary context switches of each worker, by thread id.
pub fn switches_per_worker(s: &Sluice) -> Vec<u64> {
    worker_statuses(s)
        .iter()
        .map(|st| {
            field(st, "voluntary_ctxt_switches")
                .parse::<u64>()
                .expect("a count")
        })
        .collect()
}

/// Voluntary context switches of all workers together.
pub fn voluntary_switches(s: &Sluice) -> u64 {
    switches_per_worker(s).iter().sum()
}

/// Each worker's state: `S` (sleeping), `R` (running), ...
pub fn worker_states(s: &Sluice) -> Vec<char> {
    worker_statuses(s)
        .iter()
        .map(|st| field(st, "State").chars().next().unwrap_or('?'))
        .collect()
}

/// Whether every worker sleeps (none polls).
pub fn all_asleep(s: &Sluice) -> bool {
    worker_states(s).iter().all(|c| *c == 'S')
}
