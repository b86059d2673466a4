//! Test support shared by Strata's crates (a dev-dependency only; nothing here ships).
//!
//! - [`check`] and [`mutate`]: fixed-seed property runs over decoders fed random and mutated
//!   bytes, the short companions of the cargo-fuzz targets.
//! - [`KillLoop`]: runs a child test of the current test binary, SIGKILLs it at seeded
//!   moments and checks after each kill that nothing it acknowledged was lost.

use std::fmt::Debug;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Runs `test` on `cases` values of `strategy` drawn from a generator seeded with `seed`
/// (reproducible in CI; the fuzzers explore beyond it). Each test file picks its own seed.
pub fn check<S: Strategy>(seed: u8, cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: Debug,
{
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    if let Err(e) = runner.run(&strategy, |v| {
        test(v);
        Ok(())
    }) {
        panic!("{e}");
    }
}

/// `base` with the bytes at `flips` (positions taken modulo its length) overwritten, then
/// cut to `cut` modulo its length + 1 if given.
pub fn mutate(base: &[u8], flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = base.to_vec();
    let len = b.len();
    if len > 0 {
        for &(pos, byte) in flips {
            b[pos % len] = byte;
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (len + 1));
    }
    b
}

/// A SIGKILL loop: the child is this test binary running the test `child_test` with the
/// environment variable `child_env` set to the data directory; it prints `ack N` after
/// each unit of work N is durable. The loop kills it after a seeded moment, then calls the
/// verifier with the last acknowledged N; the verifier reopens the store, asserts that
/// everything acknowledged is there and whole, and returns how many units exist.
///
/// `STRATA_CRASH_CYCLES` overrides the number of kills and `STRATA_CRASH_SEED` the moments
/// (scripts/torture.sh varies them between runs).
pub struct KillLoop {
    pub child_test: &'static str,
    pub child_env: &'static str,
    pub cycles: u64,
    pub seed: u64,
    /// Each child runs for `min_ms` plus a seeded part of `spread_ms` before the kill.
    pub min_ms: u64,
    pub spread_ms: u64,
}

impl KillLoop {
    pub fn run(&self, dir: &Path, mut verify: impl FnMut(Option<u64>) -> u64) {
        let cycles: u64 = env_u64("STRATA_CRASH_CYCLES").unwrap_or(self.cycles);
        let mut rng = env_u64("STRATA_CRASH_SEED").map_or(self.seed, |s| s | 1);
        let exe = std::env::current_exe().expect("test binary");
        let mut last = 0;
        for cycle in 0..cycles {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let run_for = Duration::from_millis(self.min_ms + rng % self.spread_ms.max(1));
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    self.child_test,
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(self.child_env, dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn child");
            let stdout = child.stdout.take().expect("child stdout");
            let reader = std::thread::spawn(move || {
                let mut acked = None;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(n) = line.strip_prefix("ack ") {
                        acked = n.trim().parse::<u64>().ok();
                    }
                }
                acked
            });
            let started = Instant::now();
            while started.elapsed() < run_for {
                std::thread::sleep(Duration::from_millis(5));
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
            let acked = reader.join().expect("reader thread");
            let next = verify(acked);
            assert!(next >= last, "cycle {cycle}: went backwards");
            last = next;
        }
        assert!(last > 0, "the child never acknowledged anything");
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Deterministic pseudo-random numbers for tests: xorshift64 (a non-zero seed stays
/// non-zero). Tests that need reproducible inputs without proptest use this or [`SplitMix`].
pub struct XorShift(pub u64);

impl XorShift {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Deterministic pseudo-random numbers for tests: splitmix64 (any seed, zero included).
pub struct SplitMix(pub u64);

impl SplitMix {
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Runs the program `exe` (a test's `env!("CARGO_BIN_EXE_...")`) with `args` to its end:
/// whether it succeeded, its stdout and its stderr.
pub fn run(exe: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("run the program");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
