//! How the server uses glibc's malloc, so its resident memory stays flat under steady load. glibc
//! gives every thread that allocates while the others hold theirs an arena of its own, up to
//! eight per core, and an arena keeps the memory freed in it: it only hands back the free space
//! at its top, never free pages between live chunks. labcron's work comes in bursts spread over
//! many threads (1,000 every-second jobs mean 1,000 library entries, closures and messages made
//! and dropped each second on the tokio workers, plus the blocking pool's short-lived threads),
//! so each of up to 16 arenas grew to the highest burst it had happened to take: measured with
//! `fire_memory`, 13 arenas held 13.3 MB for 6.9 MB in use, and VmRSS rose 3.6 MiB in an hour
//! (26.8 → 30.4) with no growth of the memory in use; one `malloc_trim(0)` by hand gave 3.5 MB
//! back at once. So the server caps the arenas at one per core (more cannot run at once anyway)
//! before its runtime starts threads, and a background task hands free pages back every
//! `TRIM_EVERY`. Other allocators (musl) have neither knob; there this module does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free pages are handed back to the system. A pass costs well under a millisecond
/// with the server's few-MB heaps; every 10 s keeps a burst's freed memory from staying resident
/// for long.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Caps glibc's arenas at the number of cores. Call it first in `main`, before any thread starts:
/// arenas made before the cap stay. An operator's own cap (`MALLOC_ARENA_MAX`, or
/// `glibc.malloc.arena_max` in `GLIBC_TUNABLES`), which glibc has applied already, is kept.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
            return;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(i32::MAX as usize) as libc::c_int;
        // SAFETY: mallopt only sets an allocator parameter; it has no memory-safety preconditions.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cores);
        }
    }
}

/// Hands the pages malloc holds free back to the system (all arenas). Returns whether any were.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's own; it has no
        // memory-safety preconditions.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Starts the task that calls `trim` every `TRIM_EVERY` (on the blocking pool: a pass walks
/// every arena's free lists) until `stop` is cancelled.
pub fn spawn_trim(stop: CancellationToken) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            if tokio::task::spawn_blocking(trim).await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory freed in the middle of the heap (a live chunk above it keeps it from the top) stays
    /// resident until `trim` hands it back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trim_gives_back_memory_freed_below_live_chunks() {
        // Many small chunks (below the mmap threshold, so they live in the arena), touched, then
        // every one but the last freed: the last keeps the arena's top from shrinking.
        let mut chunks: Vec<Vec<u8>> = (0..4096).map(|_| vec![1u8; 16 * 1024]).collect();
        let keep = chunks.pop();
        drop(chunks);
        let before = rss_anon_kib();
        assert!(trim(), "malloc_trim found no free pages to give back");
        let after = rss_anon_kib();
        drop(keep);
        // 64 MiB were freed; other test threads allocate meanwhile, so ask for a part of it only.
        assert!(
            before.saturating_sub(after) >= 16 * 1024,
            "RssAnon {before} kB before the trim, {after} kB after"
        );
    }

    /// Set in the child process `arenas_are_capped_at_the_cores` starts.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const CHILD: &str = "LABCRON_TEST_ARENA_CHILD";

    /// glibc gives each new thread that allocates an arena of its own (up to 8 per core); after
    /// `limit_arenas`, eight new threads allocating at once add none beyond one per core. Run in
    /// a child process of its own (this test binary, running `arena_cap_child`), since arenas
    /// are per process and never go away.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn arenas_are_capped_at_the_cores() {
        let run = |limit: bool| -> (usize, usize) {
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["allocator::tests::arena_cap_child", "--exact", "--ignored"])
                .args(["--nocapture", "--test-threads", "1"])
                .env(CHILD, if limit { "limit" } else { "default" })
                .env_remove("MALLOC_ARENA_MAX")
                .env_remove("GLIBC_TUNABLES")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout);
            let line = text
                .lines()
                .find_map(|l| l.split_once("arenas ").map(|(_, count)| count))
                .unwrap_or_else(|| panic!("no count from the child: {text}"));
            let (before, after) = line.split_once(' ').unwrap();
            (before.parse().unwrap(), after.parse().unwrap())
        };
        let cores = std::thread::available_parallelism().unwrap().get();
        let (before, after) = run(true);
        assert!(
            after <= before.max(cores),
            "{after} arenas after eight threads allocated ({before} before, {cores} cores)"
        );
        // The same child without the cap: the threads do get arenas of their own, so the
        // count above means something.
        let (before, after) = run(false);
        assert!(
            after > before.max(cores),
            "without the cap, {after} arenas ({before} before)"
        );
    }

    /// The child of `arenas_are_capped_at_the_cores`; does nothing when run on its own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    #[ignore = "run by arenas_are_capped_at_the_cores in a process of its own"]
    fn arena_cap_child() {
        let Ok(mode) = std::env::var(CHILD) else {
            return;
        };
        let before = arenas();
        if mode == "limit" {
            limit_arenas();
        }
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let held: Vec<Box<[u8; 64]>> = (0..1000).map(|_| Box::new([1; 64])).collect();
                    // Every thread still holds its memory while the others allocate.
                    start.wait();
                    held.len()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        println!("arenas {before} {}", arenas());
    }

    /// How many arenas malloc has: the `<heap nr=` elements of `malloc_info`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn arenas() -> usize {
        let mut buffer: *mut libc::c_char = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: open_memstream gives a stream writing into a buffer it allocates; the stream is
        // closed before the buffer is read, and the buffer is freed once, with free.
        unsafe {
            let stream = libc::open_memstream(&mut buffer, &mut size);
            assert!(!stream.is_null());
            assert_eq!(libc::malloc_info(0, stream), 0);
            libc::fclose(stream);
            let text =
                String::from_utf8_lossy(std::slice::from_raw_parts(buffer as *const u8, size))
                    .into_owned();
            libc::free(buffer.cast());
            text.matches("<heap nr=").count()
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_anon_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
}
