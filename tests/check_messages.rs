//! What `sekisho check` prints for broken configs, byte for byte: each `tests/check-errors/X.yaml`
//! is checked and its output (stdout and stderr as one stream, then `exit N`) compared with
//! `X.out`. A change to a message is then a visible change to a `.out` file:
//! `SEKISHO_BLESS=1 cargo test --test check_messages` rewrites them for review. A case whose
//! first line is `# args: ...` is checked with those arguments after `check -c X.yaml`
//! (e.g. `# args: --strict`).

use std::path::Path;
use std::process::Command;

#[test]
fn check_prints_what_it_always_printed_for_each_broken_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check-errors");
    let bless = std::env::var_os("SEKISHO_BLESS").is_some();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/check-errors")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "too few cases: {names:?}");
    let mut differ = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).expect("read case");
        let args = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# args:"))
            .unwrap_or("");
        let out = Command::new("sh")
            .arg("-c")
            .arg("f=$1; shift; \"$0\" check -c \"$f\" \"$@\" 2>&1; echo \"exit $?\"")
            .arg(env!("CARGO_BIN_EXE_sekisho"))
            .arg(name)
            .args(args.split_whitespace())
            .current_dir(&dir)
            .env_remove("STATE_DIRECTORY")
            .output()
            .expect("sh runs");
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        let expected_path = dir.join(name.replace(".yaml", ".out"));
        if bless {
            std::fs::write(&expected_path, &got).expect("write .out");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display()));
        if got != expected {
            differ.push(format!(
                "--- {name}: expected\n{expected}--- {name}: got\n{got}"
            ));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
