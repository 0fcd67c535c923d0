//! Every fuzz target (src/fuzzing.rs) on every committed seed (`fuzz/corpus/TARGET/`) and on
//! every input that ever crashed it (`fuzz/regressions/TARGET/`), on the stable toolchain, so
//! that `cargo test` keeps each finding fixed. Then a short mutation run per target on stable
//! (bit flips, truncations and splices of the seeds, from a fixed seed): not a substitute for
//! libFuzzer's coverage-guided runs (`scripts/fuzz.sh`, nightly), but it runs everywhere.

use std::path::{Path, PathBuf};

use sekisho::fuzzing::{run, TARGETS};

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file() && p.file_name().is_none_or(|n| n != ".keep"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_target_has_seeds_and_replays_them_and_its_regressions() {
    for target in TARGETS {
        let seeds = inputs(&fuzz_dir().join("corpus").join(target));
        assert!(!seeds.is_empty(), "fuzz/corpus/{target}/ has no seed");
        let found = inputs(&fuzz_dir().join("regressions").join(target));
        for (path, bytes) in seeds.iter().chain(&found) {
            let ran = std::panic::catch_unwind(|| run(target, bytes));
            assert!(
                matches!(ran, Ok(true)),
                "{target} failed on {}",
                path.display()
            );
        }
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "no cargo-fuzz target for {target}"
        );
    }
    // a folder for a target that does not exist is a mistake
    for dir in ["corpus", "regressions"] {
        for e in std::fs::read_dir(fuzz_dir().join(dir)).expect("fuzz folder") {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            assert!(
                TARGETS.contains(&name.as_str()),
                "fuzz/{dir}/{name}: no such target"
            );
        }
    }
}

#[test]
fn a_short_mutation_run_of_each_target_finds_nothing() {
    let mut rng: u64 = 0x5eed_5eed_5eed_5eed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for target in TARGETS {
        let seeds: Vec<Vec<u8>> = inputs(&fuzz_dir().join("corpus").join(target))
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        let rounds = if target == "config_yaml" { 300 } else { 3000 };
        for round in 0..rounds {
            let mut input = seeds[next() as usize % seeds.len()].clone();
            for _ in 0..=(next() % 4) {
                match next() % 4 {
                    0 if !input.is_empty() => {
                        let i = next() as usize % input.len();
                        input[i] ^= 1 << (next() % 8);
                    }
                    1 if !input.is_empty() => input.truncate(next() as usize % input.len()),
                    2 => {
                        let other = &seeds[next() as usize % seeds.len()];
                        let at = next() as usize % (input.len() + 1);
                        input.splice(at..at, other.iter().copied().take(16));
                    }
                    _ => input.push(next() as u8),
                }
            }
            let ran = std::panic::catch_unwind(|| run(target, &input));
            assert!(
                matches!(ran, Ok(true)),
                "{target} failed on mutation {round}: {input:?} (save it under fuzz/regressions/{target}/)"
            );
        }
    }
}
