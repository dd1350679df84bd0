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
//! `TRIM_EVERY`. A trim cannot give back a page that holds any chunk in use, and glibc's
//! per-thread caches keep freed small chunks "in use" on every page they sit on, so the server
//! also runs with those caches off (`without_thread_caches`). Other allocators (musl) have none
//! of these knobs; there this module does nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often free pages are handed back to the system. A pass costs well under a millisecond
/// with the server's few-MB heaps; every 10 s keeps a burst's freed memory from staying resident
/// for long.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// The tunable that turns glibc's per-thread caches off (see `without_thread_caches`).
const NO_THREAD_CACHES: &str = "glibc.malloc.tcache_count=0";
/// Set only between `without_thread_caches`' exec and `restore_tunables`: the caller's own
/// `GLIBC_TUNABLES` (`=` and its value), or empty when it had none.
const TUNABLES_BEFORE: &str = "_LABCRON_GLIBC_TUNABLES_BEFORE";

/// The `GLIBC_TUNABLES` value that turns the thread caches off, given the caller's own; `None`
/// when the caller set the caches' size itself (that choice is kept).
fn tunables_without_thread_caches(own: Option<&str>) -> Option<String> {
    match own {
        Some(own) if own.contains("tcache_count") => None,
        Some(own) if !own.is_empty() => Some(format!("{own}:{NO_THREAD_CACHES}")),
        _ => Some(NO_THREAD_CACHES.to_string()),
    }
}

/// Starts the binary again (the same process: `exec`) with glibc's per-thread caches off, unless
/// that was done already or the caller sized them itself; then puts the caller's
/// `GLIBC_TUNABLES` back, so the job processes the server starts get the environment it was
/// given. Call it first in `main`, before any thread starts. glibc reads its tunables only when
/// a program starts, and has no `mallopt` for these caches: each thread keeps up to 7 freed
/// chunks of each small size (up to 1 KB) for itself, and those chunks stay "in use" for the
/// arena, so each pins the page it sits on and `trim` cannot give that page back. Measured with
/// `fire_memory` (README, Benchmarks: "Memory while firing"): with the caches, the free memory
/// left resident after the trims grew 1.3 MiB in 11 minutes while the memory in use stayed
/// flat; without them it stayed within 2.2–2.8 MiB, and the lows were 1.5–2 MiB lower. If the
/// exec fails, the server runs on with the caches.
pub fn without_thread_caches() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if let Some(before) = std::env::var_os(TUNABLES_BEFORE) {
            // The second start: the caches are off; the environment goes back to the caller's.
            // SAFETY: called first in `main`, before any other thread exists, so nothing reads
            // the environment while it changes.
            unsafe {
                match before.to_str().and_then(|b| b.strip_prefix('=')) {
                    Some(own) => std::env::set_var("GLIBC_TUNABLES", own),
                    None => std::env::remove_var("GLIBC_TUNABLES"),
                }
                std::env::remove_var(TUNABLES_BEFORE);
            }
            return;
        }
        let own = std::env::var("GLIBC_TUNABLES").ok();
        let Some(tunables) = tunables_without_thread_caches(own.as_deref()) else {
            return;
        };
        let mut args = std::env::args_os();
        let Some(arg0) = args.next() else {
            return;
        };
        // The binary's own path, not `/proc/self/exe`: the process's name (`ps`, `pkill`) is
        // taken from the path it was started with.
        let Ok(binary) = std::env::current_exe() else {
            return;
        };
        let before = own.map(|o| format!("={o}")).unwrap_or_default();
        // `exec` returns only if it failed.
        let _ = std::process::Command::new(binary)
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .env(TUNABLES_BEFORE, before)
            .exec();
    }
}

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

    #[test]
    fn thread_caches_go_off_unless_the_caller_sized_them() {
        assert_eq!(
            tunables_without_thread_caches(None).as_deref(),
            Some("glibc.malloc.tcache_count=0")
        );
        assert_eq!(
            tunables_without_thread_caches(Some("")).as_deref(),
            Some("glibc.malloc.tcache_count=0")
        );
        assert_eq!(
            tunables_without_thread_caches(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0")
        );
        assert_eq!(
            tunables_without_thread_caches(Some("glibc.malloc.tcache_count=7")),
            None
        );
    }

    /// Set in the child process `the_second_start_gives_back_the_callers_tunables` starts.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    const RESTORE_CHILD: &str = "LABCRON_TEST_RESTORE_CHILD";

    /// After the exec, `without_thread_caches` puts the caller's `GLIBC_TUNABLES` back (or
    /// removes it when the caller had none) and drops its own marker. Run in a child process
    /// (this test binary, started with the environment the exec gives), since it changes the
    /// environment.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_second_start_gives_back_the_callers_tunables() {
        let run = |before: &str| -> String {
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["allocator::tests::restore_child", "--exact", "--ignored"])
                .args(["--nocapture", "--test-threads", "1"])
                .env(RESTORE_CHILD, "1")
                .env("GLIBC_TUNABLES", NO_THREAD_CACHES)
                .env(TUNABLES_BEFORE, before)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            text.lines()
                .find_map(|l| l.split_once("environment ").map(|(_, rest)| rest))
                .unwrap_or_else(|| panic!("no line from the child: {text}"))
                .to_string()
        };
        assert_eq!(
            run("=glibc.malloc.arena_max=2"),
            "Some(\"glibc.malloc.arena_max=2\") None"
        );
        assert_eq!(run(""), "None None");
    }

    /// The child of `the_second_start_gives_back_the_callers_tunables`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    #[ignore = "run by the_second_start_gives_back_the_callers_tunables in a process of its own"]
    fn restore_child() {
        if std::env::var_os(RESTORE_CHILD).is_none() {
            return;
        }
        without_thread_caches();
        println!(
            "environment {:?} {:?}",
            std::env::var("GLIBC_TUNABLES").ok(),
            std::env::var(TUNABLES_BEFORE).ok()
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
